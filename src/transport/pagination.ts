import type { HandlerContext } from "@connectrpc/connect";
import type { PaginationRequest, PaginationResponse } from "../../gen/gitpod/v1/pagination_pb.js";
import type { PageRequest } from "../services/pagination.js";

/**
 * The page a List call asks for. The official SDK puts `token` and `pageSize` in the URL
 * query of its POST and pages on by changing the query token while resending the same
 * body, so the query wins over `pagination` in the body when both are set.
 */
export function pageRequest(body: PaginationRequest | undefined, ctx: HandlerContext): PageRequest {
  const query = new URL(ctx.url, "http://localhost").searchParams;
  const token = query.get("token") || body?.token || "";
  const size = query.get("pageSize");
  let pageSize = body?.pageSize ?? 0;
  if (size !== null && size !== "") pageSize = /^-?\d{1,10}$/.test(size) ? Number(size) : NaN;
  return { pageSize, token };
}

export function pageResponse(nextToken: string): PaginationResponse {
  return { $typeName: "gitpod.v1.PaginationResponse", nextToken };
}
