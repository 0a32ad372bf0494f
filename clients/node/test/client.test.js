import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, test } from "node:test";
import {
  Code,
  ConnectError,
  FaultClient,
  FaultView,
  timestampDate,
  timestampFromDate,
} from "../src/index.js";
import { liveServer } from "./server.js";

/**
 * @import { LiveServer } from "./server.js"
 * @import { Fault } from "../src/index.js"
 */

const TRACE = 'Traceback (most recent call last):\n  File "resize.py", line 7\nVolumeError';

/** @type {LiveServer} */
let server;
/** @type {FaultClient} */
let admin;
/** @type {FaultClient} */
let anonymous;

before(async () => {
  server = await liveServer();
  const token = process.env.FAULTSVC_TOKEN;
  admin = new FaultClient({ target: server.target, token, roles: ["admin"], timeoutMs: 10_000 });
  anonymous = new FaultClient({ target: server.target, token, timeoutMs: 10_000 });
});

after(async () => {
  admin?.close();
  anonymous?.close();
  await server?.stop();
});

/** Each test uses its own instances, so a shared server's data never interferes. */
function newInstanceId() {
  return `node-${randomUUID()}`;
}

/**
 * A fault of its own each time, unless given the fingerprint of another.
 *
 * @param {string} instanceId
 * @param {number} secondsAgo when the error happened
 * @param {string} fingerprint what makes repeats one fault
 * @returns {Promise<Fault>}
 */
function recordResizeFailure(instanceId, secondsAgo = 0, fingerprint = randomUUID()) {
  return admin.recordFault({
    instanceId,
    message: "Resize of volume failed",
    details: TRACE,
    source: "taskmanager",
    host: "node-1",
    occurTime: timestampFromDate(new Date(Date.now() - secondsAgo * 1000)),
    fingerprint,
  });
}

/** @param {readonly Fault[]} faults */
const idsOf = (faults) => faults.map((fault) => fault.id);

test("recordFault returns the stored fault, with details for an admin", async () => {
  const instanceId = newInstanceId();
  const fault = await recordResizeFailure(instanceId);
  assert.notEqual(fault.id, "");
  assert.equal(fault.instanceId, instanceId);
  assert.equal(fault.message, "Resize of volume failed");
  assert.equal(fault.details, TRACE);
  assert.equal(fault.source, "taskmanager");
  assert.equal(fault.host, "node-1");
  assert.ok(fault.createTime, "create_time is set");
  assert.ok(fault.updateTime, "update_time is set");
});

test("recordFault by a caller without roles returns the fault without details", async () => {
  const fault = await anonymous.recordFault({
    instanceId: newInstanceId(),
    message: "Backup failed",
    details: TRACE,
  });
  assert.equal(fault.message, "Backup failed");
  assert.equal(fault.details, "");
  const stored = await admin.getLatestFault(fault.instanceId);
  assert.equal(stored?.details, TRACE, "details are stored, only hidden");
});

test("a fault's request ids reach everyone, its trace id only admins", async () => {
  const ids = {
    requestId: "req-5f1c7a3e-2b7d-4c43-9a55-3c8d0f3b8e21",
    globalRequestId: "req-0b8f6b2a-7e0f-4b1e-8a0e-9d6c1e2f3a4b",
    traceId: "4bf92f3577b34da6a3ce929d0e0e4736",
  };
  const fault = await admin.recordFault({
    instanceId: newInstanceId(),
    message: "Resize failed",
    ...ids,
  });
  assert.deepEqual(
    { requestId: fault.requestId, globalRequestId: fault.globalRequestId, traceId: fault.traceId },
    ids,
  );
  const forAnyone = await anonymous.getLatestFault(fault.instanceId);
  assert.equal(forAnyone?.requestId, ids.requestId);
  assert.equal(forAnyone?.globalRequestId, ids.globalRequestId);
  assert.equal(forAnyone?.traceId, "");
});

test("searchFaults finds an admin the faults of any instance by request id", async () => {
  const requestId = `req-${randomUUID()}`;
  const first = await admin.recordFault({ instanceId: newInstanceId(), message: "a", requestId });
  const second = await admin.recordFault({ instanceId: newInstanceId(), message: "b", requestId });
  const found = await admin.searchFaults(`request_id = "${requestId}"`, { pageSize: 10 });
  assert.deepEqual(idsOf(found.faults), [second.id, first.id]);
  await assert.rejects(
    anonymous.searchFaults(`request_id = "${requestId}"`),
    (error) => error instanceof ConnectError && error.code === Code.PermissionDenied,
  );
});

test("a fault without a trace id takes the one of the call's traceparent", async () => {
  const traceId = "0af7651916cd43dd8448eb211c80319c";
  const fault = await admin.recordFault(
    { instanceId: newInstanceId(), message: "Backup failed" },
    { headers: { traceparent: `00-${traceId}-b7ad6b7169203331-01` } },
  );
  assert.equal(fault.traceId, traceId);
});

test("a malformed trace id is INVALID_ARGUMENT naming trace_id", async () => {
  await assert.rejects(
    admin.recordFault({ instanceId: newInstanceId(), message: "m", traceId: "NOT-HEX" }),
    (error) =>
      error instanceof ConnectError &&
      error.code === Code.InvalidArgument &&
      error.rawMessage.includes("trace_id"),
  );
});

test("occur_time becomes the fault's create_time", async () => {
  const occurred = new Date(Date.now() - 3_600_000);
  const fault = await admin.recordFault({
    instanceId: newInstanceId(),
    message: "Guest agent lost heartbeat",
    occurTime: timestampFromDate(occurred),
  });
  assert.ok(fault.createTime);
  assert.equal(timestampDate(fault.createTime).getTime(), occurred.getTime());
});

test("recording again with the same fault_id returns the stored fault", async () => {
  const instanceId = newInstanceId();
  const request = { instanceId, message: "Reboot failed", faultId: randomUUID() };
  const first = await admin.recordFault(request);
  const retry = await admin.recordFault(request);
  assert.equal(first.id, request.faultId);
  assert.deepEqual(retry, first);
  const { faults } = await admin.listFaults(instanceId);
  assert.deepEqual(idsOf(faults), [first.id]);
});

test("getLatestFault returns the newest fault, with details only for an admin", async () => {
  const instanceId = newInstanceId();
  await recordResizeFailure(instanceId, 60);
  const newest = await recordResizeFailure(instanceId, 30);

  const forAdmin = await admin.getLatestFault(instanceId);
  assert.equal(forAdmin?.id, newest.id);
  assert.equal(forAdmin?.details, TRACE);

  const forAnyone = await anonymous.getLatestFault(instanceId);
  assert.equal(forAnyone?.id, newest.id);
  assert.equal(forAnyone?.message, newest.message);
  assert.equal(forAnyone?.details, "");
});

test("a repeat counts into its fault: first and latest occurrence, and how many", async () => {
  const instanceId = newInstanceId();
  const first = await admin.recordFault({ instanceId, message: "Volume 7 is full" });
  const occurred = new Date(Date.now() + 1000);
  const again = await admin.recordFault({
    instanceId,
    message: "Volume 8 is full",
    occurTime: timestampFromDate(occurred),
  });
  assert.equal(again.id, first.id);
  assert.match(first.fingerprint, /^[0-9a-f]{64}$/);
  assert.equal(again.fingerprint, first.fingerprint);
  assert.equal(first.occurrenceCount, 1n);
  assert.equal(again.occurrenceCount, 2n);
  assert.deepEqual(again.createTime, first.createTime);
  assert.ok(again.lastOccurTime);
  assert.equal(timestampDate(again.lastOccurTime).getTime(), occurred.getTime());
  assert.equal(again.message, "Volume 8 is full");
  const { faults } = await anonymous.listFaults(instanceId);
  assert.deepEqual(idsOf(faults), [first.id]);
});

test("a caller's own fingerprint decides what repeats", async () => {
  const instanceId = newInstanceId();
  const one = await recordResizeFailure(instanceId, 2, "resize");
  const two = await admin.recordFault({ instanceId, message: "other text", fingerprint: "resize" });
  assert.equal(two.id, one.id);
  assert.equal(two.occurrenceCount, 2n);
});

test("getLatestFault of an instance without faults is undefined", async () => {
  assert.equal(await admin.getLatestFault(newInstanceId()), undefined);
});

test("batchGetLatestFaults returns the latest fault of each instance that has one", async () => {
  const [first, second, faultless] = [newInstanceId(), newInstanceId(), newInstanceId()];
  await recordResizeFailure(first, 60);
  const firstLatest = await recordResizeFailure(first, 30);
  const secondLatest = await recordResizeFailure(second);

  const forAdmin = await admin.batchGetLatestFaults([first, second, faultless]);
  assert.deepEqual(idsOf(forAdmin).sort(), [firstLatest.id, secondLatest.id].sort());
  // The list view's batch leaves details out unless the FULL view is asked for.
  assert.ok(forAdmin.every((fault) => fault.details === ""));
  const full = await admin.batchGetLatestFaults([first, second], { view: FaultView.FULL });
  assert.ok(full.every((fault) => fault.details === TRACE));
  const basic = await admin.getLatestFault(first, { view: FaultView.BASIC });
  assert.equal(basic?.details, "");

  const forAnyone = await anonymous.batchGetLatestFaults([first, second, faultless]);
  assert.deepEqual(idsOf(forAnyone).sort(), [firstLatest.id, secondLatest.id].sort());
  assert.ok(forAnyone.every((fault) => fault.details === ""));
});

test("listFaults pages through the history newest first", async () => {
  const instanceId = newInstanceId();
  const oldest = await recordResizeFailure(instanceId, 90);
  const middle = await recordResizeFailure(instanceId, 60);
  const newest = await recordResizeFailure(instanceId, 30);

  const firstPage = await admin.listFaults(instanceId, { pageSize: 2 });
  assert.deepEqual(idsOf(firstPage.faults), [newest.id, middle.id]);
  assert.notEqual(firstPage.nextPageToken, "");
  assert.ok(firstPage.faults.every((fault) => fault.details === TRACE));

  const lastPage = await admin.listFaults(instanceId, {
    pageSize: 2,
    pageToken: firstPage.nextPageToken,
  });
  assert.deepEqual(idsOf(lastPage.faults), [oldest.id]);
  assert.equal(lastPage.nextPageToken, "");

  /** @type {Fault[]} */
  const seenByAnyone = [];
  for await (const fault of anonymous.allFaults(instanceId, { pageSize: 1 })) {
    seenByAnyone.push(fault);
  }
  assert.deepEqual(idsOf(seenByAnyone), [newest.id, middle.id, oldest.id]);
  assert.ok(seenByAnyone.every((fault) => fault.details === ""));
});

test("every read takes the roles of its call over the client's", async () => {
  const instanceId = newInstanceId();
  const recorded = await anonymous.recordFault(
    { instanceId, message: "Resize failed", details: TRACE, host: "db-7" },
    { roles: ["admin"] },
  );
  const asAdmin = { roles: ["admin"] };
  /** @type {Fault[]} */
  const every = [];
  for await (const fault of anonymous.allFaults(instanceId, {}, asAdmin)) {
    every.push(fault);
  }
  const readByAdmin = [
    recorded,
    await anonymous.getLatestFault(instanceId, asAdmin),
    ...(await anonymous.listFaults(instanceId, {}, asAdmin)).faults,
    ...every,
  ];
  assert.deepEqual(
    readByAdmin.map((fault) => [fault?.details, fault?.host]),
    Array(4).fill([TRACE, "db-7"]),
  );
  // A batch serves list views: no details, but the admin's host.
  const [batched] = await anonymous.batchGetLatestFaults([instanceId], asAdmin);
  assert.equal(batched?.host, "db-7");
  const readByTenant = await admin.getLatestFault(instanceId, { roles: [] });
  assert.equal(readByTenant?.details, "");
  assert.equal((await anonymous.getLatestFault(instanceId))?.details, "");
});

test("clearFaults clears every fault of the instance and says how many", async () => {
  const instanceId = newInstanceId();
  await recordResizeFailure(instanceId, 60);
  await recordResizeFailure(instanceId, 30);

  assert.equal(await admin.clearFaults(instanceId), 2);
  assert.equal(await admin.getLatestFault(instanceId), undefined);
  assert.deepEqual((await admin.listFaults(instanceId)).faults, []);
  assert.equal(await admin.clearFaults(instanceId), 0);
});

test("an empty instance_id is INVALID_ARGUMENT naming the field", async (t) => {
  /** @type {Record<string, () => Promise<unknown>>} */
  const calls = {
    recordFault: () => admin.recordFault({ instanceId: "", message: "Resize failed" }),
    getLatestFault: () => admin.getLatestFault(""),
    listFaults: () => admin.listFaults(""),
    clearFaults: () => admin.clearFaults(""),
  };
  for (const [rpc, call] of Object.entries(calls)) {
    await t.test(rpc, async () => {
      await assert.rejects(call, (/** @type {unknown} */ error) => {
        assert.ok(error instanceof ConnectError, `not a ConnectError: ${error}`);
        assert.equal(error.code, Code.InvalidArgument, error.message);
        const badRequest = error.details.find(
          (detail) => "type" in detail && detail.type === "google.rpc.BadRequest",
        );
        assert.ok(
          badRequest && "value" in badRequest && badRequest.value instanceof Uint8Array,
          "carries a google.rpc.BadRequest",
        );
        assert.ok(
          Buffer.from(badRequest.value).includes("instance_id"),
          "the BadRequest names instance_id",
        );
        return true;
      });
    });
  }
});
