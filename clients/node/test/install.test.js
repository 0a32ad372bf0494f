// The client as another project uses it: installed with npm from a folder
// outside this one, imported by its package name, calling a live faultsvc.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { liveServer } from "./server.js";

/** @import { LiveServer } from "./server.js" */

const run = promisify(execFile);
const CLIENT_DIR = dirname(dirname(fileURLToPath(import.meta.url)));

// What another project writes, as the README shows it.
const SCRIPT = `
import { FaultClient } from "@faultsvc/client";

const [target, instanceId] = process.argv.slice(2);
const client = new FaultClient({ target, token: process.env.FAULTSVC_TOKEN, timeoutMs: 10_000 });
await client.recordFault({ instanceId, message: "Resize failed", details: "Traceback" });
const forTenant = await client.getLatestFault(instanceId);
const forAdmin = await client.getLatestFault(instanceId, { roles: ["admin"] });
client.close();
console.log(JSON.stringify({ tenant: forTenant?.details, admin: forAdmin?.details }));
`;

/** @type {LiveServer} */
let server;
/** @type {string} */
let project;

before(async () => {
  server = await liveServer();
  project = mkdtempSync(join(tmpdir(), "faultsvc-node-user-"));
});

after(async () => {
  rmSync(project, { recursive: true, force: true });
  await server?.stop();
});

test("a project outside this folder installs the client with npm and calls faultsvc", async () => {
  const manifest = { name: "instance-dashboard", private: true, type: "module" };
  writeFileSync(join(project, "package.json"), JSON.stringify(manifest));
  writeFileSync(join(project, "show.js"), SCRIPT);

  await run("npm", ["install", "--install-links", "--no-audit", "--no-fund", CLIENT_DIR], {
    cwd: project,
  });
  const { stdout } = await run("node", ["show.js", server.target, `node-${randomUUID()}`], {
    cwd: project,
  });

  assert.deepEqual(JSON.parse(stdout), { tenant: "", admin: "Traceback" });
});
