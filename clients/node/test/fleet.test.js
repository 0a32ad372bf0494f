// The fleet's reads against a live server: search across instances, watch as
// faults are recorded (async iteration over the stream), rank a window.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import { Code, ConnectError, FaultClient, FaultView } from "../src/index.js";
import { liveServer } from "./server.js";

/**
 * @import { LiveServer } from "./server.js"
 * @import { FaultOccurrence, WatchFaultsResponse } from "../src/index.js"
 */

const WAIT_MS = 20_000;

/** @type {LiveServer} */
let server;
/** @type {FaultClient} */
let admin;
/** @type {FaultClient} */
let tenant;

before(async () => {
  server = await liveServer();
  const token = process.env.FAULTSVC_TOKEN;
  admin = new FaultClient({ target: server.target, token, roles: ["admin"], timeoutMs: 10_000 });
  tenant = new FaultClient({ target: server.target, token, roles: ["member"], timeoutMs: 10_000 });
});

after(async () => {
  admin?.close();
  tenant?.close();
  await server?.stop();
});

/**
 * A source of its own for each test: a shared server's other faults never match it.
 *
 * @returns {string}
 */
function newSource() {
  return `node-${randomUUID()}`;
}

/**
 * Records a fault as a component would.
 *
 * @param {string} instanceId
 * @param {string} source
 * @param {object} [fields]
 */
function recordFault(instanceId, source, fields = {}) {
  return admin.recordFault({
    instanceId,
    message: "Volume attach failed",
    details: "Traceback: frame",
    host: "compute-7",
    source,
    ...fields,
  });
}

/**
 * The first `count` occurrences of a watch, and the last resume token it sent.
 *
 * @param {AsyncIterable<WatchFaultsResponse>} responses
 * @param {number} count
 * @param {() => Promise<unknown>} [meanwhile] run once the watch has sent its first response
 * @returns {Promise<{ occurrences: FaultOccurrence[], token: string }>}
 */
async function firstOccurrences(responses, count, meanwhile) {
  /** @type {FaultOccurrence[]} */
  const occurrences = [];
  let token = "";
  let started = false;
  for await (const response of responses) {
    token = response.resumeToken;
    occurrences.push(...response.occurrences);
    if (!started) {
      started = true;
      assert.equal(response.occurrences.length, 0, "a watch from now starts with a token alone");
      await meanwhile?.();
    }
    if (occurrences.length >= count) {
      break; // ends the watch
    }
  }
  return { occurrences, token };
}

test("searchFaults lists the faults of every instance, narrowed by its filter", async () => {
  const source = newSource();
  const first = await recordFault(`node-${randomUUID()}`, source);
  const second = await recordFault(`node-${randomUUID()}`, source, { host: "compute-9" });
  const found = await admin.searchFaults(`source = "${source}"`);
  assert.deepEqual(
    found.faults.map((fault) => fault.id),
    [second.id, first.id],
  );
  const byHost = await admin.searchFaults(`source = "${source}" AND host = "compute-9"`);
  assert.deepEqual(
    byHost.faults.map((fault) => fault.id),
    [second.id],
  );
  const everything = await admin.searchFaults("", { pageSize: 1 });
  assert.equal(everything.faults.length, 1);
  assert.notEqual(everything.nextPageToken, "");
});

test("watchFaults streams each occurrence as it is recorded", async () => {
  const source = newSource();
  const instanceId = `node-${randomUUID()}`;
  const { occurrences } = await firstOccurrences(
    admin.watchFaults(`source = "${source}"`, { view: FaultView.FULL }),
    3,
    async () => {
      for (let n = 0; n < 3; n += 1) {
        await recordFault(instanceId, source);
      }
    },
  );
  assert.equal(occurrences.length, 3);
  assert.deepEqual(
    occurrences.map((occurrence) => occurrence.fault?.occurrenceCount),
    [1n, 2n, 3n],
  );
  assert.ok(occurrences.every((occurrence) => occurrence.fault?.details === "Traceback: frame"));
  assert.ok(occurrences.every((occurrence) => occurrence.recordTime !== undefined));
});

test("a tenant watches one instance, without admin-only fields", async () => {
  const instanceId = `node-${randomUUID()}`;
  const { occurrences } = await firstOccurrences(
    tenant.watchFaults(`instance_id = "${instanceId}"`, { view: FaultView.FULL }),
    1,
    () => recordFault(instanceId, newSource(), { traceId: "4bf92f3577b34da6a3ce929d0e0e4736" }),
  );
  const [{ fault }] = occurrences;
  assert.equal(fault?.instanceId, instanceId);
  assert.equal(fault?.details, "");
  assert.equal(fault?.host, "");
  assert.equal(fault?.traceId, "");
});

test("a tenant may not watch the whole fleet", async () => {
  await assert.rejects(
    firstOccurrences(tenant.watchFaults(), 1),
    (/** @type {unknown} */ error) =>
      error instanceof ConnectError && error.code === Code.PermissionDenied,
  );
});

test("followFaults goes on from a resume token without missing anything", async () => {
  const source = newSource();
  const { token } = await firstOccurrences(admin.watchFaults(`source = "${source}"`), 0);
  const missed = [];
  for (let n = 0; n < 3; n += 1) {
    missed.push(await recordFault(`node-${randomUUID()}`, source));
  }
  /** @type {string[]} */
  const followed = [];
  const deadline = AbortSignal.timeout(WAIT_MS);
  for await (const occurrence of admin.followFaults(
    `source = "${source}"`,
    { resumeToken: token },
    { signal: deadline },
  )) {
    followed.push(occurrence.fault?.id ?? "");
    if (followed.length === missed.length) {
      break;
    }
  }
  assert.deepEqual(
    followed,
    missed.map((fault) => fault.id),
  );
});

test("rankFaults ranks the faults of a window with their counts per interval", async () => {
  const source = newSource();
  const busy = `node-${randomUUID()}`;
  for (let n = 0; n < 3; n += 1) {
    await recordFault(busy, source);
  }
  await recordFault(`node-${randomUUID()}`, source);
  const ranking = await admin.rankFaults(`source = "${source}"`, {
    startTime: new Date(Date.now() - 60 * 60 * 1000),
    intervalCount: 6,
  });
  assert.deepEqual(
    ranking.rankedFaults.map((ranked) => [ranked.fault?.instanceId, ranked.occurrenceCount]),
    [
      [busy, 3n],
      [ranking.rankedFaults[1]?.fault?.instanceId, 1n],
    ],
  );
  const [top] = ranking.rankedFaults;
  assert.equal(top.intervalCounts.length, 6);
  assert.equal(top.intervalCounts.at(-1), 3n);
});
