// What the client puts on the wire, checked against an in-process server so it
// holds whatever the real server does with it.
import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer } from "node:http2";
import { after, before, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Code, ConnectError, FaultClient, FaultService } from "../src/index.js";

/** @type {import("node:http2").Http2Server} */
let server;
/** @type {string} */
let target;

before(async () => {
  server = createServer(
    connectNodeAdapter({
      grpc: true,
      connect: false,
      grpcWeb: false,
      routes(router) {
        router.service(FaultService, {
          // Echoes the caller's metadata back in the fault, so tests can see it.
          async getLatestFault(request, context) {
            if (request.instanceId === "forbidden") {
              throw new ConnectError("not yours", Code.PermissionDenied);
            }
            if (request.instanceId === "slow") {
              // Answers after the caller gave up, as a frozen faultsvc would.
              await sleep(5_000, undefined, { signal: context.signal }).catch(() => {});
            }
            return {
              fault: {
                instanceId: request.instanceId,
                message: context.requestHeader.get("x-roles") ?? "<none>",
                details: context.requestHeader.get("authorization") ?? "<none>",
              },
            };
          },
        });
      },
    }),
  );
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  assert.ok(address && typeof address === "object");
  target = `127.0.0.1:${address.port}`;
});

after(() => {
  server.close();
});

test("roles travel comma-separated in x-roles and the token as a bearer", async () => {
  const client = new FaultClient({ target, roles: ["reader", "admin"], token: "s3cret" });
  const fault = await client.getLatestFault("db-1");
  client.close();
  assert.equal(fault?.message, "reader,admin");
  assert.equal(fault?.details, "Bearer s3cret");
});

test("a role given as a string is sent as is", async () => {
  const client = new FaultClient({ target: `http://${target}`, roles: "admin" });
  const fault = await client.getLatestFault("db-1");
  client.close();
  assert.equal(fault?.message, "admin");
});

test("a caller without roles or token sends neither", async () => {
  const client = new FaultClient({ target });
  const fault = await client.getLatestFault("db-1");
  client.close();
  assert.equal(fault?.message, "<none>");
  assert.equal(fault?.details, "<none>");
});

test("roles and token given to a call replace the client's for that call only", async () => {
  const client = new FaultClient({ target, roles: ["admin"], token: "service" });
  const asTenant = await client.getLatestFault("db-1", { roles: [], token: "tenant-api" });
  const asReader = await client.getLatestFault("db-1", { roles: "reader" });
  const asClient = await client.getLatestFault("db-1");
  client.close();
  assert.equal(asTenant?.message, "<none>");
  assert.equal(asTenant?.details, "Bearer tenant-api");
  assert.equal(asReader?.message, "reader");
  assert.equal(asReader?.details, "Bearer service");
  assert.equal(asClient?.message, "admin");
  assert.equal(asClient?.details, "Bearer service");
});

test("a call's own deadline ends it, sooner than the client's", async () => {
  const client = new FaultClient({ target, timeoutMs: 30_000 });
  const started = Date.now();
  await assert.rejects(client.getLatestFault("slow", { timeoutMs: 200 }), {
    name: "ConnectError",
    code: Code.DeadlineExceeded,
  });
  const waited = Date.now() - started;
  client.close();
  assert.ok(waited >= 200 && waited < 2_000, `waited ${waited} ms`);
});

test("a token or role metadata cannot carry rejects as an invalid argument", async () => {
  const client = new FaultClient({ target });
  for (const options of [{ token: "s3cret\n" }, { roles: ["admin\r\nx: y"] }, { roles: "rôle" }]) {
    await assert.rejects(client.getLatestFault("db-1", options), (error) => {
      assert.ok(error instanceof ConnectError);
      assert.equal(error.code, Code.InvalidArgument);
      assert.match(error.message, /printable ASCII/);
      assert.doesNotMatch(error.message, /s3cret/);
      return true;
    });
    await assert.rejects(client.listFaults("db-1", {}, options), { code: Code.InvalidArgument });
  }
  client.close();
});

test("a failed call rejects with the gRPC status code", async () => {
  const client = new FaultClient({ target });
  await assert.rejects(client.getLatestFault("forbidden"), {
    name: "ConnectError",
    code: Code.PermissionDenied,
  });
  client.close();
});
