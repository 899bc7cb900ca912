-- Drives one scenario over HTTP/1.1 with Connect JSON or Connect binary.
-- wrk ... -s bench/load/wrk.lua URL -- SCENARIO ENCODING TOKEN RUNNERS_FILE IDS_FILE TAG
-- Prints one JSON line: requests (every answer), ok (those wrk does not count as errors,
-- which alone count as throughput: any status under 400; the service answers 200 or an error
-- status, and a checked call before each row, probe in bench/drive.ts, shows that its 200s
-- carry what was asked for), duration, errors (a status of 400 or more, or a socket error),
-- p50 and p99. No response hook checks each answer: it would cost wrk CPU on the core the
-- service shares.

local scenario, encoding, token, tag
local runners, ids = {}, {}
local counter = 0

local function lines(path)
  local out = {}
  for line in io.lines(path) do out[#out + 1] = line end
  return out
end

-- Protobuf length-delimited field; every value here is shorter than 128 bytes.
local function field(number, value)
  return string.char(number * 8 + 2, #value) .. value
end

local function pick(list) return list[math.random(#list)] end

function init(args)
  scenario, encoding, token = args[1], args[2], args[3]
  runners, ids = lines(args[4]), lines(args[5])
  -- Seeded before the tag is drawn: unseeded, every wrk process drew the same number.
  math.randomseed(os.time() + math.floor(os.clock() * 1e6))
  tag = args[6] .. "-" .. tostring(math.random(1e9))
end

local paths = {
  create = "/gitpod.v1.RunnerConfigurationService/CreateSCMIntegration",
  get = "/gitpod.v1.RunnerConfigurationService/GetSCMIntegration",
  list = "/gitpod.v1.RunnerConfigurationService/ListSCMIntegrations",
}

local function body()
  if scenario == "create" then
    counter = counter + 1
    local runner, host = pick(runners), "h" .. counter .. "-" .. tag .. ".bench.example"
    local secret = "bench-secret-" .. counter
    if encoding == "json" then
      return '{"runnerId":"' .. runner .. '","scmId":"github","host":"' .. host ..
        '","oauthClientId":"bench-client","oauthPlaintextClientSecret":"' .. secret .. '"}'
    end
    return field(1, runner) .. field(2, "github") .. field(3, host) .. field(4, "bench-client") .. field(5, secret)
  elseif scenario == "get" then
    local id = pick(ids)
    if encoding == "json" then return '{"id":"' .. id .. '"}' end
    return field(1, id)
  else
    local runner = pick(runners)
    if encoding == "json" then return '{"pagination":{"pageSize":25},"filter":{"runnerIds":["' .. runner .. '"]}}' end
    return field(1, string.char(0x08, 25)) .. field(2, field(1, runner))
  end
end

function request()
  local headers = {
    ["Content-Type"] = encoding == "json" and "application/json" or "application/proto",
    ["Authorization"] = "Bearer " .. token,
  }
  return wrk.format("POST", paths[scenario], headers, body())
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests":%d,"ok":%d,"duration_us":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.requests - e.status, summary.duration, e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
