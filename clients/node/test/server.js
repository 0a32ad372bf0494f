// The faultsvc server the tests talk to: the one at FAULTSVC_TARGET, or else
// a fresh `faultsvc serve` on a free loopback port with its own SQLite file.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, rmSync } from "node:fs";
import { createConnection, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const STARTUP_TIMEOUT_MS = 30_000;

/**
 * @typedef {object} LiveServer
 * @property {string} target `host:port` to connect to.
 * @property {() => Promise<void>} stop Stops the server if it was started here.
 */

/** @returns {Promise<LiveServer>} */
export async function liveServer() {
  const target = process.env.FAULTSVC_TARGET;
  if (target) {
    return { target, stop: async () => {} };
  }
  return startServer(process.env.FAULTSVC_BIN || "faultsvc");
}

/**
 * @param {string} executable
 * @returns {Promise<LiveServer>}
 */
async function startServer(executable) {
  const dir = mkdtempSync(join(tmpdir(), "faultsvc-node-test-"));
  const port = await freePort();
  const target = `127.0.0.1:${port}`;
  const child = spawn(
    executable,
    [
      "serve",
      "--listen",
      target,
      "--database-url",
      `sqlite+aiosqlite:///${join(dir, "f.db")}`,
    ],
    { stdio: ["ignore", "inherit", "pipe"] },
  );
  let stderr = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (/** @type {string} */ chunk) => {
    stderr += chunk;
    process.stderr.write(chunk);
  });
  /** @type {Error | undefined} */
  let failure;
  child.once("error", (error) => {
    failure = new Error(
      `cannot run ${executable} (${error.message}); ` +
        "set FAULTSVC_BIN to the faultsvc executable or FAULTSVC_TARGET to a running server",
    );
  });
  child.once("exit", (code, signal) => {
    failure ??= new Error(
      `${executable} serve exited (${signal ?? code}) before accepting connections:\n${stderr}`,
    );
  });

  const stop = async () => {
    const running =
      child.pid !== undefined && child.exitCode === null && child.signalCode === null;
    if (running) {
      const gone = once(child, "exit");
      child.kill("SIGTERM");
      const forced = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await gone;
      clearTimeout(forced);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    await waitForListener(port, () => failure);
  } catch (error) {
    await stop();
    throw error;
  }
  return { target, stop };
}

/** @returns {Promise<number>} */
async function freePort() {
  const probe = createServer();
  probe.listen(0, "127.0.0.1");
  await once(probe, "listening");
  const address = probe.address();
  probe.close();
  await once(probe, "close");
  if (address === null || typeof address === "string") {
    throw new Error("could not find a free port");
  }
  return address.port;
}

/**
 * @param {number} port
 * @param {() => Error | undefined} failure why the server can no longer come up
 */
async function waitForListener(port, failure) {
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (!(await accepts(port))) {
    const error = failure();
    if (error) {
      throw error;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `faultsvc did not accept connections on port ${port} within ${STARTUP_TIMEOUT_MS} ms`,
      );
    }
    await sleep(100);
  }
}

/**
 * @param {number} port
 * @returns {Promise<boolean>}
 */
function accepts(port) {
  return new Promise((resolve) => {
    const socket = createConnection({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
