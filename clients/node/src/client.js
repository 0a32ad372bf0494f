import { Code, ConnectError, createClient } from "@connectrpc/connect";
import {
  createGrpcTransport,
  Http2SessionManager,
} from "@connectrpc/connect-node";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { FaultService } from "./gen/faultsvc/v1/fault_service_pb.js";

/**
 * @import { CallOptions } from "@connectrpc/connect"
 * @import { MessageInitShape } from "@bufbuild/protobuf"
 * @import { Timestamp } from "@bufbuild/protobuf/wkt"
 * @import { Fault, FaultOccurrence } from "./gen/faultsvc/v1/fault_pb.js"
 * @import { FaultView, ListFaultsResponse, RankFaultsResponse, RecordFaultRequestSchema, SearchFaultsResponse, WatchFaultsResponse } from "./gen/faultsvc/v1/fault_service_pb.js"
 */

/**
 * How `followFaults` resumes: `onInterruption` is told of each interruption
 * it resumes from; the pause before resuming doubles from `backoffMs[0]` to
 * `backoffMs[1]`.
 *
 * @typedef {{
 *   resumeToken?: string,
 *   view?: FaultView,
 *   onInterruption?: (error: ConnectError) => void,
 *   backoffMs?: readonly [number, number],
 * }} FollowOptions
 */

/** Interruptions a watch resumes from: the server stopped, or the watcher fell behind. */
const RESUMABLE = new Set([Code.Unavailable, Code.ResourceExhausted]);
/** How long the ids of streamed occurrences are kept, to drop what a resume streams again. */
const RECENT_MS = 10 * 60 * 1000;

/**
 * @typedef {object} FaultClientOptions
 * @property {string} target
 *   The server: `host:port` for plaintext gRPC, or a URL
 *   (`http://host:port`, or `https://host:port` for TLS).
 * @property {string} [token] Sent as `authorization: Bearer <token>`.
 * @property {string | readonly string[]} [roles]
 *   The caller's roles, sent as `x-roles` (comma-separated). Callers without
 *   an admin role receive admin-only fields such as `Fault.details` empty.
 * @property {number} [timeoutMs] Deadline of every call unless a call sets its own.
 */

/**
 * What one call may set for itself; whatever it leaves out is the client's
 * own: `roles` and `token` as in the client's options (an API serving
 * admins and tenants passes each request's roles), `timeoutMs` the call's
 * deadline, and the rest of Connect's `CallOptions` (`signal`, `headers`).
 *
 * @typedef {CallOptions & {
 *   roles?: string | readonly string[],
 *   token?: string,
 * }} FaultCallOptions
 */

/**
 * A read's call options and its view (AIP-157): `FaultView.BASIC` leaves
 * details out, `FaultView.FULL` includes them for admins. Unset, it is the
 * RPC's default: FULL, except for batchGetLatestFaults (BASIC, for list views).
 *
 * @typedef {FaultCallOptions & { view?: FaultView }} FaultReadOptions
 */

/**
 * A faultsvc.v1.FaultService client over gRPC (HTTP/2).
 *
 * Failed calls reject with a `ConnectError` whose `code` is the gRPC status
 * code (e.g. `Code.InvalidArgument`, 3).
 */
export class FaultClient {
  /** @type {Http2SessionManager} */
  #sessions;
  /** @type {import("@connectrpc/connect").Client<typeof FaultService>} */
  #rpc;
  /** @type {string | undefined} */
  #token;
  /** @type {string | readonly string[] | undefined} */
  #roles;

  /** @param {FaultClientOptions} options */
  constructor({ target, token, roles, timeoutMs }) {
    const baseUrl = baseUrlOf(target);
    this.#sessions = new Http2SessionManager(baseUrl);
    const transport = createGrpcTransport({
      baseUrl,
      sessionManager: this.#sessions,
      defaultTimeoutMs: timeoutMs,
    });
    this.#rpc = createClient(FaultService, transport);
    this.#token = token;
    this.#roles = roles;
  }

  /**
   * Records a fault and returns it as stored. Pass a `faultId` (a UUID) to
   * make retries safe: the server stores a fault id once.
   *
   * @param {MessageInitShape<typeof RecordFaultRequestSchema>} request
   * @param {FaultCallOptions} [options]
   * @returns {Promise<Fault>}
   */
  async recordFault(request, options) {
    const { fault } = await this.#rpc.recordFault(request, this.#callOptions(options));
    if (fault === undefined) {
      throw new Error("RecordFault answered without a fault");
    }
    return fault;
  }

  /**
   * The newest fault of an instance that has not been cleared, or
   * `undefined` when it has none.
   *
   * @param {string} instanceId
   * @param {FaultReadOptions} [options]
   * @returns {Promise<Fault | undefined>}
   */
  async getLatestFault(instanceId, { view, ...options } = {}) {
    const { fault } = await this.#rpc.getLatestFault(
      { instanceId, view },
      this.#callOptions(options),
    );
    return fault;
  }

  /**
   * The latest fault of each given instance that has one (at most 1,000
   * instances a call).
   *
   * @param {readonly string[]} instanceIds
   * @param {FaultReadOptions} [options]
   * @returns {Promise<Fault[]>}
   */
  async batchGetLatestFaults(instanceIds, { view, ...options } = {}) {
    const { faults } = await this.#rpc.batchGetLatestFaults(
      { instanceIds: [...instanceIds], view },
      this.#callOptions(options),
    );
    return faults;
  }

  /**
   * One page of an instance's faults, newest first. Pass the returned
   * `nextPageToken` as `pageToken` for the next page; it is empty on the last.
   * A page holds fewer than `pageSize` faults when more would not fit the
   * server's response budget.
   *
   * @param {string} instanceId
   * @param {{ pageSize?: number, pageToken?: string, view?: FaultView }} [page]
   * @param {FaultCallOptions} [options]
   * @returns {Promise<ListFaultsResponse>}
   */
  async listFaults(instanceId, page = {}, options) {
    return this.#rpc.listFaults({ instanceId, ...page }, this.#callOptions(options));
  }

  /**
   * Every fault of an instance, newest first, fetched a page at a time
   * (`timeoutMs` is the deadline of each page's call).
   *
   * @param {string} instanceId
   * @param {{ pageSize?: number, view?: FaultView }} [page]
   * @param {FaultCallOptions} [options]
   * @returns {AsyncGenerator<Fault, void, undefined>}
   */
  async *allFaults(instanceId, { pageSize, view } = {}, options) {
    let pageToken = "";
    do {
      const response = await this.listFaults(
        instanceId,
        { pageSize, pageToken, view },
        options,
      );
      yield* response.faults;
      pageToken = response.nextPageToken;
    } while (pageToken !== "");
  }

  /**
   * One page of the faults of any instance, or of those that match an
   * AIP-160 filter, the one that occurred last first: `field = "value"` on
   * `instance_id`, `source`, `host`, `fingerprint`, `request_id` and
   * `global_request_id`, and `last_occur_time` compared with `<`, `<=`,
   * `>` or `>=` to an RFC 3339 time, joined by AND. Admins only: anyone
   * else gets `Code.PermissionDenied`.
   *
   * @param {string} filter empty for every fault
   * @param {{ pageSize?: number, pageToken?: string, view?: FaultView }} [page]
   * @param {FaultCallOptions} [options]
   * @returns {Promise<SearchFaultsResponse>}
   */
  async searchFaults(filter, page = {}, options) {
    return this.#rpc.searchFaults({ filter, ...page }, this.#callOptions(options));
  }

  /**
   * The responses of WatchFaults, as an async iterable: the occurrences of
   * every instance (admins; anyone else names one with `instance_id =
   * "..."`) as they are recorded, from now on or from `resumeToken`. The
   * first response comes at once, with no occurrence and a resume token.
   * The watch has no deadline unless `timeoutMs` is given; leaving the
   * iteration (`break`) ends it.
   *
   * @param {string} [filter] AIP-160, e.g. `source = "taskmanager"`; empty for all
   * @param {{ resumeToken?: string, view?: FaultView }} [from]
   * @param {FaultCallOptions} [options]
   * @returns {AsyncIterable<WatchFaultsResponse>}
   */
  watchFaults(filter = "", { resumeToken, view } = {}, options = {}) {
    return this.#rpc.watchFaults(
      { filter, resumeToken, view },
      this.#callOptions({ timeoutMs: 0, ...options }),
    );
  }

  /**
   * Every occurrence recorded from now on (or from `resumeToken`), each once,
   * for as long as the iteration goes on. A watch interrupted because the
   * server stopped (`Code.Unavailable`) or the watcher fell behind
   * (`Code.ResourceExhausted`) is resumed from its last token; what it
   * streams again is dropped by id. Any other failure is thrown, and so is
   * one before the first watch started (the server cannot be reached):
   * `Code.OutOfRange` when the token is older than the server replays.
   *
   * @param {string} [filter]
   * @param {FollowOptions} [follow]
   * @param {FaultCallOptions} [options]
   * @returns {AsyncGenerator<FaultOccurrence, void, undefined>}
   */
  async *followFaults(
    filter = "",
    { resumeToken = "", view, onInterruption, backoffMs = [500, 30_000] } = {},
    options = {},
  ) {
    /** @type {Map<string, number>} occurrence id -> when it was recorded (ms) */
    const recent = new Map();
    let newest = 0;
    let pauseMs = backoffMs[0];
    let followed = false;
    for (;;) {
      try {
        for await (const response of this.watchFaults(filter, { resumeToken, view }, options)) {
          followed = true;
          for (const occurrence of response.occurrences) {
            if (recent.has(occurrence.id)) {
              continue;
            }
            const recorded = millisOf(occurrence.recordTime);
            recent.set(occurrence.id, recorded);
            newest = Math.max(newest, recorded);
            yield occurrence;
          }
          for (const [id, recorded] of recent) {
            if (recorded >= newest - RECENT_MS) {
              break; // in the order they came: the rest are newer
            }
            recent.delete(id);
          }
          resumeToken = response.resumeToken;
          pauseMs = backoffMs[0];
        }
      } catch (error) {
        const interrupted = ConnectError.from(error);
        // A first watch that never started is a failure to report, not to wait out.
        if (!RESUMABLE.has(interrupted.code) || !followed) {
          throw interrupted;
        }
        onInterruption?.(interrupted);
        await new Promise((resolve) => setTimeout(resolve, pauseMs));
        pauseMs = Math.min(pauseMs * 2, backoffMs[1]);
      }
    }
  }

  /**
   * The faults that occurred most in a window, most first, each with its
   * count in every interval of the window (admins): what `faultsvc faults
   * top` prints.
   *
   * @param {string} filter compares `instance_id`, `source`, `host`, `fingerprint`; empty for all
   * @param {{
   *   startTime: Date,
   *   endTime?: Date,
   *   intervalCount?: number,
   *   maxFaults?: number,
   *   view?: FaultView,
   * }} window `endTime` defaults to the server's now, 12 intervals, 10 faults
   * @param {FaultCallOptions} [options]
   * @returns {Promise<RankFaultsResponse>}
   */
  async rankFaults(filter, { startTime, endTime, intervalCount, maxFaults, view }, options) {
    return this.#rpc.rankFaults(
      {
        filter,
        startTime: timestampFromDate(startTime),
        endTime: endTime === undefined ? undefined : timestampFromDate(endTime),
        intervalCount,
        maxFaults,
        view,
      },
      this.#callOptions(options),
    );
  }

  /**
   * Clears an instance's faults (e.g. it was deleted or has recovered) and
   * returns how many were cleared.
   *
   * @param {string} instanceId
   * @param {FaultCallOptions} [options]
   * @returns {Promise<number>}
   */
  async clearFaults(instanceId, options) {
    const { clearedCount } = await this.#rpc.clearFaults(
      { instanceId },
      this.#callOptions(options),
    );
    return Number(clearedCount);
  }

  /**
   * Connect's options for one call: its own headers, plus the caller's
   * token and roles (the call's, else the client's).
   *
   * @param {FaultCallOptions} [options]
   * @returns {CallOptions}
   */
  #callOptions({ roles = this.#roles, token = this.#token, ...options } = {}) {
    const headers = new Headers(options.headers);
    if (token) {
      headers.set("authorization", `Bearer ${metadataValue(token, "the token")}`);
    }
    const xRoles = typeof roles === "string" ? roles : (roles ?? []).join(",");
    if (xRoles) {
      headers.set("x-roles", metadataValue(xRoles, "a role"));
    }
    return { ...options, headers };
  }

  /**
   * Closes the connection now, cancelling calls still in flight. An idle
   * connection does not keep the process alive, so this is for shutting down
   * at once; a later call opens a new connection.
   */
  close() {
    this.#sessions.abort();
  }
}

/**
 * `value`, if gRPC metadata can carry it (printable ASCII only).
 *
 * @param {string} value
 * @param {string} what names the value in the error; the value itself may be a credential.
 * @returns {string}
 */
function metadataValue(value, what) {
  if (!/^[\x20-\x7e]*$/.test(value)) {
    throw new ConnectError(
      `${what} holds characters gRPC metadata cannot carry (only printable ASCII)`,
      Code.InvalidArgument,
    );
  }
  return value;
}

/**
 * @param {string} target
 * @returns {string}
 */
function baseUrlOf(target) {
  return /^https?:\/\//.test(target) ? target : `http://${target}`;
}

/**
 * @param {Timestamp | undefined} stamp
 * @returns {number} milliseconds since the epoch; 0 when unset
 */
function millisOf(stamp) {
  return stamp === undefined ? 0 : timestampDate(stamp).getTime();
}
