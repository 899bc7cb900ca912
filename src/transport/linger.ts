/**
 * How this server closes an HTTP/1.1 connection whose client may still be sending: a body
 * refused before it was read, a request node's parser could not take, requests pipelined
 * behind one that ends the connection.
 *
 * Closed at once, with bytes unread or still coming, the connection is reset by the kernel,
 * and a client whose kernel gets the reset before the client has read the answer loses the
 * answer too: it sees EPIPE or ECONNRESET where a 429 was sent. So the answer goes out, then
 * our side of the connection ends (FIN), and what the client still sends is read and dropped
 * until it ends its side too, or for LINGER_MS, or up to LINGER_BYTES, whichever comes first;
 * then the socket closes. Nothing read then is parsed: a request that follows is never run.
 */
import type net from "node:net";

/** The longest a closing connection is read on. A client reads its answer long before. */
export const LINGER_MS = 2000;

/**
 * The most a closing connection reads and drops; past it the connection is cut. A client cut
 * off while still writing may report the reset rather than the answer it was sent (node's
 * fetch, the SDK): with 4 MiB, uploads of 8 and 16 MiB still lost their 429 now and then.
 * Dropping 16 MiB costs the event loop a few ms.
 */
export const LINGER_BYTES = 16 * 1024 * 1024;

/** Sockets whose requests are no longer read: what comes is dropped (see stopTakingRequests). */
const dropping = new WeakSet<net.Socket>();

/** Whether `socket` takes no more requests (stopTakingRequests): its parser reports nothing more that needs an answer. */
export function takesNoMoreRequests(socket: net.Socket): boolean {
  return dropping.has(socket);
}

/**
 * Stops node's parser taking requests from `socket`: what comes from now on is read and
 * dropped, and past LINGER_BYTES the socket is cut. Answers due to requests already taken
 * still go out. Safe to call more than once.
 */
export function stopTakingRequests(socket: net.Socket): void {
  if (socket.destroyed || dropping.has(socket)) return;
  dropping.add(socket);
  // node's parser is fed no more: off the socket's "data" event, and, once a "data" listener
  // is added, no longer reading the socket's handle itself (node's listener wrapper).
  socket.removeAllListeners("data");
  let left = LINGER_BYTES;
  socket.on("data", (chunk: Buffer) => {
    left -= chunk.length;
    if (left < 0) socket.destroy();
  });
  // A reset now ends what is left of it; it is no error of the service's.
  socket.on("error", () => socket.destroy());
  socket.resume();
}

/** Sockets closing through closeLingering. */
const closing = new WeakSet<net.Socket>();

/**
 * Ends `socket` once what was written to it has gone out, reads and drops what still comes
 * (see above), and then closes it. Safe to call more than once.
 */
export function closeLingering(socket: net.Socket): void {
  if (socket.destroyed || closing.has(socket)) return;
  closing.add(socket);
  stopTakingRequests(socket);
  const timer = setTimeout(() => socket.destroy(), LINGER_MS);
  timer.unref();
  socket.once("close", () => clearTimeout(timer));
  // The client has sent all it will: nothing is left unread to turn the close into a reset.
  socket.once("end", () => socket.destroy());
  socket.end();
}

type ParsedSocket = net.Socket & { parser?: { incoming?: { complete: boolean } | null } | null };

/**
 * node's own close of a socket after an answer that ends the connection (`connection: close`,
 * sent for a refused body, asked for by the client, HTTP/1.0, or at shutdown): lingering if
 * the request's body is still coming, at once as node does otherwise.
 */
function destroySoon(this: ParsedSocket): void {
  const incoming = this.parser?.incoming;
  if (incoming && !incoming.complete) closeLingering(this);
  else (Object.getPrototypeOf(this) as net.Socket).destroySoon.call(this);
}

/** Makes node's close of `socket` after an answer that ends the connection a lingering one where a body is still coming. */
export function lingerWhenNodeCloses(socket: net.Socket): void {
  if (socket.destroySoon !== destroySoon) socket.destroySoon = destroySoon;
}
