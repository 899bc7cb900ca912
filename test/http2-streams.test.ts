/**
 * HTTP/2 streams and header lists: the bound on concurrent streams a connection may open, and
 * the 16 KiB limit on a header list.
 */
import assert from "node:assert/strict";
import http2 from "node:http2";
import { after, before, describe, it } from "node:test";
import { FLAG, FRAME, frame, headerFrames, literal, RawH2, REFUSED_STREAM, requestBlock } from "./corpus/raw-h2.js";
import { startServer } from "./harness.js";
import { EVENTUALLY_MS, type LimitedServer, startLimited, nodeAnswerLines } from "./limited-server.js";

describe("concurrent HTTP/2 streams", () => {
  it("the default server advertises at most 100 concurrent streams, and header lists of 16 KiB as over HTTP/1.1", async () => {
    const s = await startServer();
    const session = http2.connect(s.url);
    session.on("error", () => {});
    try {
      await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
      assert.equal(session.remoteSettings.maxConcurrentStreams, 100);
      assert.equal(session.remoteSettings.maxHeaderListSize, 16 * 1024);
      // Between our 16 KiB and nghttp2's own 64 KiB, so that only our limit can refuse it.
      const big = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", "x-padding": "a".repeat(30_000) });
      const refused = await new Promise<string>((resolve) => {
        big.on("response", (h) => resolve(`answered ${h[":status"]}`));
        big.on("error", (e: NodeJS.ErrnoException) => resolve(e.code ?? "error"));
        big.end("{}");
      });
      assert.equal(refused, "ERR_HTTP2_STREAM_ERROR");
    } finally {
      session.close();
      await s.close();
    }
  });

  it("a header list over 16 KiB is refused also from a client that has not acknowledged the limit, and one under it served", async () => {
    // nghttp2 enforces the advertised size only once the client has acknowledged it; curl's
    // first request goes out before that.
    const s = await startLimited({});
    try {
      const outcome = async (paddingBytes: number, path = "/gitpod.v1.RunnerService/ListRunners") => {
        const raw = await RawH2.connect(s.port, { ackSettings: false });
        try {
          const block = Buffer.concat([requestBlock(path, s.token), literal("x-padding", "a".repeat(paddingBytes))]);
          raw.send(headerFrames(1, block));
          raw.send(frame(FRAME.DATA, FLAG.END_STREAM, 1, Buffer.from("{}")));
          await raw.until(() => raw.answered.has(1) || raw.resets.has(1));
          return raw.resets.has(1) ? `reset ${raw.resets.get(1)}` : raw.answered.has(1) ? "answered" : "nothing";
        } finally {
          raw.destroy();
        }
      };
      assert.equal(await outcome(30_000), `reset ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
      assert.equal(await outcome(16 * 1024 - 1024), "answered");
      // The refused stream has a line of its own, with its path and gRPC's reading of the reset.
      const [line] = await nodeAnswerLines(s, 1);
      assert.deepEqual([line?.procedure, line?.code, line?.http_status], ["/gitpod.v1.RunnerService/ListRunners", "resource_exhausted", null]);
      assert.equal(line?.reason, "header list over 16384 bytes");
      // A path that is most of the list is cut for the log line, and counted under no name of its own.
      assert.equal(await outcome(0, `/${"p".repeat(20_000)}`), `reset ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
      const long = (await nodeAnswerLines(s, 2))[1];
      assert.equal(long?.procedure, `/${"p".repeat(199)}…`);
    } finally {
      await s.close();
    }
  });

  describe("with a limit of 8", () => {
    const LIMIT = 8;
    let s: LimitedServer;
    before(async () => (s = await startLimited({ maxConcurrentStreams: LIMIT })));
    after(() => s.close());

    it("a client opening 40 streams at once gets them served 8 at a time, all of them", async () => {
      const session = http2.connect(s.url);
      session.on("error", () => {});
      try {
        await new Promise<void>((resolve) => session.once("remoteSettings", () => resolve()));
        assert.equal(session.remoteSettings.maxConcurrentStreams, LIMIT);
        let peak = 0;
        const watch = setInterval(() => (peak = Math.max(peak, s.server.inFlight())), 5);
        const calls = Array.from({ length: 40 }, () => {
          const stream = session.request({ ":method": "POST", ":path": "/gitpod.v1.RunnerService/ListRunners", "content-type": "application/json", authorization: `Bearer ${s.token}` });
          stream.write("{");
          // The bodies end a little later, so that the streams are open at the same time.
          setTimeout(() => stream.end("}"), 200);
          stream.resume();
          return new Promise<number>((resolve) => {
            let status = 0;
            stream.on("response", (h) => (status = Number(h[":status"])));
            stream.on("error", () => {});
            stream.on("close", () => resolve(status));
          });
        });
        const statuses = await Promise.all(calls);
        clearInterval(watch);
        assert.deepEqual(statuses, Array(40).fill(200));
        assert.ok(peak <= LIMIT, `${peak} requests were served at once`);
        assert.ok(peak > 1, "the streams were not open at the same time");
      } finally {
        session.close();
      }
    });

    it("a client that ignores the limit gets the excess streams refused, and the server serves on", async () => {
      const raw = await RawH2.connect(s.port, { ackSettings: false });
      try {
        const ids = Array.from({ length: 30 }, (_, i) => 1 + 2 * i);
        for (const id of ids) raw.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, id, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
        await raw.until(() => raw.resets.size >= ids.length - LIMIT);
        for (const id of ids) raw.send(frame(FRAME.DATA, FLAG.END_STREAM, id, Buffer.from("{}")));
        await raw.until(() => raw.answered.size >= LIMIT);
        assert.equal(raw.answered.size, LIMIT);
        assert.deepEqual([...raw.resets.values()], Array(ids.length - LIMIT).fill(REFUSED_STREAM));
        assert.ok(!raw.closed, "the connection was closed");
      } finally {
        raw.destroy();
      }
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
      assert.equal(r.status, 200);
    });

    it("a client that acknowledged the limit and then ignores it loses its connection, and the server serves on", async () => {
      const raw = await RawH2.connect(s.port, { ackSettings: true });
      try {
        for (let i = 0; i < 30; i++) raw.send(frame(FRAME.HEADERS, FLAG.END_HEADERS, 1 + 2 * i, requestBlock("/gitpod.v1.RunnerService/ListRunners", s.token)));
        assert.ok(await raw.closedWithin(EVENTUALLY_MS), "the connection stayed open");
        assert.ok(raw.goaway !== undefined && raw.goaway !== 0, `GOAWAY code ${raw.goaway}`);
        assert.equal(raw.answered.size, 0);
      } finally {
        raw.destroy();
      }
      const r = await fetch(`${s.url}/gitpod.v1.RunnerService/ListRunners`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${s.token}` }, body: "{}" });
      assert.equal(r.status, 200);
    });
  });
});

// The 16 KiB header list limit is "at most", as advertised in
// SETTINGS_MAX_HEADER_LIST_SIZE (RFC 9113 6.5.2): a list of exactly 16384 bytes is served.
it("HTTP/2: a header list of exactly 16 KiB is served, one byte more is refused", async () => {
  const s = await startServer();
  const session = http2.connect(s.url);
  session.on("error", () => {});
  try {
    const outcome = (listBytes: number) =>
      new Promise<string>((resolve) => {
        const headers: Record<string, string> = {
          ":method": "POST",
          ":path": "/gitpod.v1.RunnerService/ListRunners",
          ":scheme": "http",
          ":authority": new URL(s.url).host,
          "content-type": "application/json",
          authorization: `Bearer ${s.token}`,
        };
        // Each field counts its name, its value and 32 bytes.
        const used = Object.entries(headers).reduce((n, [k, v]) => n + k.length + v.length + 32, 0);
        headers["x-padding"] = "a".repeat(listBytes - used - "x-padding".length - 32);
        const req = session.request(headers);
        let status = 0;
        req.on("response", (h) => (status = Number(h[":status"])));
        req.on("error", () => {});
        req.resume();
        req.on("close", () => resolve(status === 200 ? "answered" : `status ${status}, rst ${req.rstCode}`));
        req.end("{}");
      });
    assert.equal(await outcome(16 * 1024), "answered");
    assert.equal(await outcome(16 * 1024 + 1), `status 0, rst ${http2.constants.NGHTTP2_ENHANCE_YOUR_CALM}`);
  } finally {
    session.close();
    await s.close();
  }
});
