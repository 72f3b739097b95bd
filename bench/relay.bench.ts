/**
 * Relay HTTP throughput on loopback: authenticated `GET /v1/tasks/:id/args` with 50 concurrent clients,
 * and 4 MiB result uploads (GPT response JSON, SD PNG). The relay runs as its own process (the
 * `crynux-relay` CLI on a real anvil), so the load generator's CPU does not count against it; requests
 * are signed before the clock starts (a signature stays valid for ±60 s and the relay has no replay
 * cache), and the client's own signing rate is measured on its own line.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRelayClient, relayDomain, signRelayRequest } from "@crynux/client";
import { deployCrynux, nodeAbi, taskAbi, taskCommitment, withSelectionGasMargin } from "@crynux/contracts";
import { startAnvil } from "@crynux/contracts/testing";
import {
  canonicalize,
  encodePng,
  type GptResponse,
  gptResultHash,
  imagePHash,
  sdResultFromPHashes,
  taskHash,
} from "@crynux/tasks";
import {
  type Abi,
  type Address,
  type Hex,
  keccak256,
  type Log,
  parseEther,
  parseEventLogs,
  toHex,
} from "viem";
import { privateKeyToAccount } from "viem/accounts";
import { writeResults } from "./lib.js";

const CONCURRENCY = 50;
const GET_SECONDS = 10;
const UPLOAD_ROUNDS = 8;
const MiB = 1024 * 1024;

type Row = {
  name: string;
  requestsPerSecond: number;
  p50Ms?: number;
  p99Ms?: number;
  mbPerSecond?: number;
  samples: number;
};

const anvil = await startAnvil({ accounts: 8, balanceEther: 1_000_000 });
const dataRoot = mkdtempSync(join(tmpdir(), "relay-bench-"));
let relayProcess: ChildProcess | undefined;
try {
  const addresses = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
  const send = async (
    from: number,
    contract: "task" | "node",
    functionName: string,
    args: unknown[],
    value?: bigint,
  ) => {
    const request = {
      address: addresses[contract],
      abi: (contract === "task" ? taskAbi : nodeAbi) as Abi,
      functionName,
      args,
      value,
      account: anvil.walletClient(from).account,
    } as never;
    const gas = withSelectionGasMargin(await anvil.publicClient.estimateContractGas(request));
    const hash = await anvil.walletClient(from).writeContract({ ...(request as object), gas } as never);
    const receipt = await anvil.publicClient.waitForTransactionReceipt({ hash });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted`);
    return receipt;
  };
  for (const i of [1, 2, 3])
    await send(i, "node", "join", ["NVIDIA GeForce RTX 4090", 24n, "bench", 3], parseEther("400"));
  const CREATOR = 4;
  const createTask = async (taskType: 0 | 1, hash: Hex) => {
    const receipt = await send(
      CREATOR,
      "task",
      "createTask",
      [taskType, hash, keccak256(toHex("d")), 0n, 1n],
      parseEther("1"),
    );
    const started = (
      parseEventLogs({ abi: taskAbi, logs: receipt.logs as Log[] }) as unknown as {
        eventName: string;
        args: Record<string, unknown>;
      }[]
    ).filter((log) => log.eventName === "TaskStarted");
    return {
      taskId: started[0]!.args["taskId"] as bigint,
      nodes: started.map((l) => l.args["selectedNode"] as Address),
    };
  };
  const succeed = async (taskId: bigint, nodes: Address[], result: Hex) => {
    const nonce = (round: number) => keccak256(toHex(`n${taskId}-${round}`));
    const index = (node: Address) => anvil.accounts.findIndex((a) => a.address === node);
    for (const [round, node] of nodes.entries())
      await send(index(node), "task", "submitCommitment", [
        taskId,
        BigInt(round),
        taskCommitment(result, nonce(round)),
      ]);
    for (const [round, node] of nodes.entries())
      await send(index(node), "task", "disclose", [taskId, BigInt(round), result, nonce(round)]);
    return nodes[0]!;
  };
  const accountOf = (address: Address) =>
    privateKeyToAccount(anvil.accounts.find((a) => a.address === address)!.privateKey);

  const relay = await startRelayProcess({
    CRYNUX_RELAY_RPC_URL: anvil.rpcUrl,
    CRYNUX_RELAY_TASK_CONTRACT: addresses.task,
    CRYNUX_RELAY_PORT: "0",
    CRYNUX_RELAY_CONFIRMATIONS: "0",
    CRYNUX_RELAY_POLLING_INTERVAL_MS: "50",
    CRYNUX_RELAY_DATA_DIR: join(dataRoot, "db"),
    CRYNUX_RELAY_BLOB_DIR: join(dataRoot, "blobs"),
    CRYNUX_RELAY_RATE_LIMIT_REQUESTS: String(1e9),
  });
  const domain = relayDomain({ chainId: anvil.chain.id, taskContract: addresses.task });
  const waitIndexed = async () => {
    const head = Number(await anvil.publicClient.getBlockNumber());
    const client = createRelayClient({ url: relay });
    while ((await client.health()).indexedBlock < head) await new Promise((r) => setTimeout(r, 50));
  };

  // A GPT task whose arguments are stored; the creator and its 3 nodes may read them.
  const args = {
    model: "o/r:Q4_0",
    messages: [{ role: "user" as const, content: "Benchmark the relay, please." }],
  };
  const task = await createTask(1, taskHash(args));
  await waitIndexed();
  await createRelayClient({
    url: relay,
    account: accountOf(anvil.accounts[CREATOR]!.address),
  }).uploadTaskArgs(task.taskId, args);
  // Finished at once so that its nodes are free for the upload tasks; its arguments stay readable.
  const firstResultNode = await succeed(task.taskId, task.nodes, keccak256(toHex("result")));
  await send(
    anvil.accounts.findIndex((a) => a.address === firstResultNode),
    "task",
    "reportResultsUploaded",
    [task.taskId, 0n],
  );
  const readers = [anvil.accounts[CREATOR]!.address, ...task.nodes].map(accountOf);
  const argsPath = `/v1/tasks/${task.taskId}/args`;

  const rows: Row[] = [];

  // Client side: how many relay requests one core signs per second.
  {
    let signed = 0;
    const start = performance.now();
    while (performance.now() - start < 2000) {
      await signRelayRequest({
        account: readers[signed % readers.length]!,
        domain,
        method: "GET",
        path: argsPath,
      });
      signed++;
    }
    const seconds = (performance.now() - start) / 1000;
    rows.push({
      name: "client: signRelayRequest (EIP-712, viem)",
      requestsPerSecond: signed / seconds,
      samples: signed,
    });
  }

  // Server side: 50 clients, each sending pre-signed GETs back to back.
  {
    const pool = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        signRelayRequest({
          account: readers[i % readers.length]!,
          domain,
          method: "GET",
          path: argsPath,
        }).then((s) => s.headers),
      ),
    );
    const url = relay + argsPath;
    // Warm-up: connections opened, JIT warmed on both sides.
    await Promise.all(
      pool.slice(0, CONCURRENCY).map((headers) => fetch(url, { headers }).then((r) => r.arrayBuffer())),
    );
    const latencies: number[] = [];
    let failures = 0;
    const deadline = performance.now() + GET_SECONDS * 1000;
    const start = performance.now();
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async (_, client) => {
        for (let i = client; performance.now() < deadline; i += CONCURRENCY) {
          const t0 = performance.now();
          const response = await fetch(url, { headers: pool[i % pool.length]! });
          await response.arrayBuffer();
          latencies.push(performance.now() - t0);
          if (response.status !== 200) failures++;
        }
      }),
    );
    const seconds = (performance.now() - start) / 1000;
    if (failures > 0) throw new Error(`${failures} GET requests failed`);
    latencies.sort((a, b) => a - b);
    rows.push({
      name: `GET /v1/tasks/:id/args, signed, ${CONCURRENCY} concurrent clients`,
      requestsPerSecond: latencies.length / seconds,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      samples: latencies.length,
    });
  }

  // 4 MiB result uploads, sent again and again (after the first, each is an idempotent re-upload: the relay
  // still reads, verifies, hashes and checks everything, and finds the blob already stored).
  const upload = async (
    name: string,
    path: string,
    body: Uint8Array,
    contentType: string,
    signer: Address,
  ) => {
    const { headers } = await signRelayRequest({
      account: accountOf(signer),
      domain,
      method: "PUT",
      path,
      body,
    });
    const times: number[] = [];
    for (let i = 0; i < UPLOAD_ROUNDS + 1; i++) {
      const t0 = performance.now();
      const response = await fetch(relay + path, {
        method: "PUT",
        headers: { ...headers, "content-type": contentType },
        body: body as Uint8Array<ArrayBuffer>,
      });
      const text = await response.text();
      if (response.status !== 201 && response.status !== 200)
        throw new Error(`${name}: ${response.status} ${text}`);
      if (i > 0) times.push(performance.now() - t0); // the first one also wrote the blob: not a steady state
    }
    times.sort((a, b) => a - b);
    const p50 = percentile(times, 0.5);
    rows.push({
      name,
      requestsPerSecond: 1000 / p50,
      p50Ms: p50,
      p99Ms: times.at(-1)!,
      mbPerSecond: body.length / 1e6 / (p50 / 1000),
      samples: times.length,
    });
  };

  {
    const sentence = "All work and no play makes Jack a dull boy. ";
    const text = sentence.repeat(Math.ceil((4 * MiB) / sentence.length)).slice(0, 4 * MiB - 200);
    const response: GptResponse = {
      model: "o/r:Q4_0",
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "length" }],
      usage: { prompt_tokens: 10, completion_tokens: 1_000_000, total_tokens: 1_000_010 },
    };
    const body = new TextEncoder().encode(canonicalize(response));
    const gptArgs = { model: "o/r:Q4_0", messages: [{ role: "user", content: "Write a lot." }] };
    const gpt = await createTask(1, taskHash(gptArgs));
    const resultNode = await succeed(gpt.taskId, gpt.nodes, gptResultHash(response));
    await send(
      anvil.accounts.findIndex((a) => a.address === resultNode),
      "task",
      "reportResultsUploaded",
      [gpt.taskId, 0n],
    );
    await waitIndexed();
    await upload(
      `PUT results, GPT response JSON of ${(body.length / MiB).toFixed(1)} MiB`,
      `/v1/tasks/${gpt.taskId}/results`,
      body,
      "application/json",
      resultNode,
    );
  }
  {
    // Noise barely compresses (the constant alpha does): a 1144×1144 RGBA PNG of noise is about 4 MiB.
    const side = 1144;
    const pixels = new Uint8Array(side * side * 4);
    let seed = 1;
    for (let i = 0; i < pixels.length; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      pixels[i] = i % 4 === 3 ? 255 : seed >>> 24;
    }
    const image = encodePng(pixels, side, side);
    const sdArgs = { base_model: "stabilityai/sdxl-turbo", prompt: "noise", task_config: { num_images: 1 } };
    const sd = await createTask(0, taskHash(sdArgs));
    const resultNode = await succeed(
      sd.taskId,
      sd.nodes,
      sdResultFromPHashes([imagePHash(pixels, side, side)]),
    );
    await waitIndexed();
    const form = new FormData();
    form.append("0", new Blob([image as Uint8Array<ArrayBuffer>], { type: "image/png" }), "0.png");
    const encoded = new Response(form);
    const contentType = encoded.headers.get("content-type")!;
    const body = new Uint8Array(await encoded.arrayBuffer());
    await upload(
      `PUT results, SD: one ${side}×${side} PNG of ${(image.length / MiB).toFixed(1)} MiB (decode + pHash)`,
      `/v1/tasks/${sd.taskId}/results`,
      body,
      contentType,
      resultNode,
    );
  }

  printAndSave("relay", rows);
} finally {
  relayProcess?.kill("SIGTERM");
  if (relayProcess && relayProcess.exitCode === null)
    await new Promise((resolve) => relayProcess!.once("exit", resolve));
  await anvil.stop();
  rmSync(dataRoot, { recursive: true, force: true });
}

/** Starts `crynux-relay` (the CLI) as a child process and resolves with its URL once it listens. */
function startRelayProcess(env: Record<string, string>): Promise<string> {
  const cli = join(import.meta.dirname, "..", "examples", "relay", "src", "cli.ts");
  const child = spawn(process.execPath, ["--conditions=source", "--import", "tsx", cli], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "inherit"],
  });
  relayProcess = child;
  return new Promise((resolve, reject) => {
    let output = "";
    child.stdout!.on("data", (chunk: Buffer) => {
      output += chunk.toString();
      const match = /listening on (http:\/\/\S+)/.exec(output);
      if (match) resolve(match[1]!);
    });
    child.once("exit", (code) => reject(new Error(`crynux-relay exited with code ${code}: ${output}`)));
  });
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

function printAndSave(suite: string, rows: Row[]): void {
  const ms = (value: number | undefined) => (value === undefined ? "" : `${value.toFixed(2)} ms`);
  const lines = [
    `### ${suite}`,
    "",
    "| operation | requests/s | p50 | p99 | MB/s |",
    "|---|---:|---:|---:|---:|",
    ...rows.map(
      (row) =>
        `| ${row.name} | ${Math.round(row.requestsPerSecond).toLocaleString("en-US")} | ${ms(row.p50Ms)} | ${ms(row.p99Ms)} | ${
          row.mbPerSecond === undefined ? "" : row.mbPerSecond.toFixed(1)
        } |`,
    ),
  ];
  console.log(`${lines.join("\n")}\n`);
  writeResults(suite, { rows });
}
