/**
 * `npm run bench:gas`: gasUsed of every call of one successful GPT task, and of createTask as the queue
 * grows to 1,000 tasks, on a real anvil. Gas is deterministic up to the random node selection.
 */
import { deployCrynux, nodeAbi, taskAbi, taskCommitment, withSelectionGasMargin } from "@crynux/contracts";
import { startAnvil } from "@crynux/contracts/testing";
import { type Abi, type Hex, keccak256, parseEther, parseEventLogs, toHex } from "viem";
import { writeResults } from "./lib.js";

/** The original Crynux Helium contracts, steady state (/work/shared/reference/original-gas.md). */
const ORIGINAL = { gptTask: 2_800_000n, sdTask: 3_030_000n };
const TARGET_SHARE = 0.6;

const anvil = await startAnvil({ accounts: 80, balanceEther: 1_000_000 });
try {
  const addresses = await deployCrynux(anvil.walletClient(0), anvil.publicClient, { queueSizeLimit: 1100 });
  const send = async (
    from: number,
    address: Hex,
    abi: Abi,
    functionName: string,
    args: unknown[],
    value?: bigint,
  ) => {
    const request = {
      address,
      abi,
      functionName,
      args,
      value,
      account: anvil.walletClient(from).account,
    } as never;
    const gas = withSelectionGasMargin(await anvil.publicClient.estimateContractGas(request));
    const hash = await anvil.walletClient(from).writeContract({ ...(request as object), gas } as never);
    // A generous timeout: on a loaded shared machine a receipt can take minutes (viem gives up after 3).
    const receipt = await anvil.publicClient.waitForTransactionReceipt({ hash, timeout: 600_000 });
    if (receipt.status !== "success") throw new Error(`${functionName} reverted`);
    return receipt;
  };
  const rows: [string, bigint][] = [];

  // createTask with a growing queue: no node has joined yet, so every task waits.
  const queuedAt = new Map<number, bigint>();
  const marks = new Set([0, 1, 10, 100, 1000]);
  for (let n = 0; n <= 1000; n++) {
    // Rising fees: every task is the new maximum, so each insertion sifts to the top of the dispatch heap
    // (the worst case, log2(n) levels).
    const fee = parseEther("0.01") + BigInt(n) * parseEther("0.0001");
    const receipt = await send(
      5,
      addresses.task,
      taskAbi,
      "createTask",
      [1, keccak256(toHex(`q${n}`)), keccak256(toHex("d")), 0n, 100n],
      fee,
    );
    if (marks.has(n)) queuedAt.set(n, receipt.gasUsed);
    if (n % 250 === 0) console.error(`[gas] ${n} tasks queued`);
  }
  for (const [n, gas] of queuedAt)
    rows.push([`createTask, queued behind ${n} task${n === 1 ? "" : "s"}`, gas]);

  // A fresh network for the full task.
  const fresh = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
  for (const i of [1, 2, 3]) {
    const receipt = await send(
      i,
      fresh.node,
      nodeAbi,
      "join",
      ["NVIDIA GeForce RTX 4090", 24n, "node-llama-cpp@3.22.1/cpu/t1/b512/c4096", 3],
      parseEther("400"),
    );
    rows.push([`join (node ${i})`, receipt.gasUsed]);
  }
  // The second of two tasks is the steady state: the first also pays for first-time storage writes.
  const fullTask = async (taskType: 0 | 1, result: Hex, cap: bigint) => {
    const full: [string, bigint][] = [];
    for (let task = 0; task < 2; task++) {
      full.length = 0;
      const created = await send(
        4,
        fresh.task,
        taskAbi,
        "createTask",
        [taskType, keccak256(toHex(`t${taskType}-${task}`)), keccak256(toHex("d")), 0n, cap],
        parseEther("1"),
      );
      full.push(["createTask (starts at once)", created.gasUsed]);
      const started = parseEventLogs({ abi: taskAbi, logs: created.logs, eventName: "TaskStarted" });
      const taskId = started[0]!.args.taskId;
      const nodeOf = (round: number) =>
        anvil.accounts.findIndex(
          (a) => a.address.toLowerCase() === started[round]!.args.selectedNode.toLowerCase(),
        );
      const nonce = (round: number) => keccak256(toHex(`n${taskType}-${task}-${round}`));
      for (const round of [0, 1, 2]) {
        const receipt = await send(nodeOf(round), fresh.task, taskAbi, "submitCommitment", [
          taskId,
          BigInt(round),
          taskCommitment(result, nonce(round)),
        ]);
        full.push([`submitCommitment #${round + 1}`, receipt.gasUsed]);
      }
      for (const round of [0, 1, 2]) {
        const receipt = await send(nodeOf(round), fresh.task, taskAbi, "disclose", [
          taskId,
          BigInt(round),
          result,
          nonce(round),
        ]);
        full.push([`disclose #${round + 1}`, receipt.gasUsed]);
      }
      const uploaded = await send(nodeOf(0), fresh.task, taskAbi, "reportResultsUploaded", [taskId, 0n]);
      full.push(["reportResultsUploaded", uploaded.gasUsed]);
    }
    return { calls: full, total: full.reduce((sum, [, gas]) => sum + gas, 0n) };
  };
  console.error("[gas] full GPT and SD tasks");
  const gpt = await fullTask(1, keccak256(toHex("result")), 256n);
  rows.push(...gpt.calls.map(([what, gas]) => [`${what} (2nd task)`, gas] as [string, bigint]));
  const total = gpt.total;
  rows.push(["full successful GPT task (8 transactions)", total]);
  // 48 bytes of results (6 images × an 8-byte pHash), as in the original's measurement.
  const sd = await fullTask(0, toHex(new Uint8Array(48).map((_, i) => i + 1)), 6n);
  rows.push(["full successful SD task, 6 images (48-byte result, 8 transactions)", sd.total]);

  // createTask (starts at once) as the number of node groups grows: selection walks the groups that have an
  // available node (at most maxGroups, 64 by default). Group 0 has the 3 nodes a GPT task needs; every other
  // group has one node. Each measurement runs on a snapshot that is reverted afterwards.
  console.error("[gas] createTask by node groups");
  const grouped = await deployCrynux(anvil.walletClient(0), anvil.publicClient);
  const byGroups = new Map<number, { gpt: bigint; sd: bigint }>();
  let groupsJoined = 0;
  let account = 8;
  for (const target of [1, 8, 32, 64]) {
    while (groupsJoined < target) {
      const members = groupsJoined === 0 ? 3 : 1;
      for (let k = 0; k < members; k++) {
        await send(
          account++,
          grouped.node,
          nodeAbi,
          "join",
          [`GPU ${groupsJoined}`, 24n, "rt", 3],
          parseEther("400"),
        );
      }
      groupsJoined++;
    }
    const measure = async (taskType: number) => {
      const snapshot = await anvil.testClient.snapshot();
      const receipt = await send(
        4,
        grouped.task,
        taskAbi,
        "createTask",
        [taskType, keccak256(toHex(`g${target}-${taskType}`)), keccak256(toHex("d")), 0n, 1n],
        parseEther("1"),
      );
      await anvil.testClient.revert({ id: snapshot });
      return receipt.gasUsed;
    };
    byGroups.set(target, { gpt: await measure(1), sd: await measure(0) });
  }
  for (const [groups, { gpt, sd }] of byGroups) {
    rows.push([`createTask (starts at once) with ${groups} node group${groups === 1 ? "" : "s"}: GPT`, gpt]);
    rows.push([`createTask (starts at once) with ${groups} node group${groups === 1 ? "" : "s"}: SD`, sd]);
  }

  const lines = ["### gas (anvil, gasUsed from receipts)", "", "| call | gas |", "|---|---:|"];
  for (const [what, gas] of rows) lines.push(`| ${what} | ${gas.toLocaleString("en-US")} |`);
  console.log(lines.join("\n"));
  const share = (ours: bigint, original: bigint) => ((Number(ours) / Number(original)) * 100).toFixed(1);
  console.log(
    `\nFull GPT task: ${share(total, ORIGINAL.gptTask)} % of the original Helium contracts' 2.80 M; full SD task: ${share(sd.total, ORIGINAL.sdTask)} % of 3.03 M (target ≤ ${TARGET_SHARE * 100} %).`,
  );
  const g = (n: number) => Number(queuedAt.get(n)!);
  console.log(
    `Queued createTask growth: +${g(10) - g(1)} gas from 1 to 10 queued, +${g(100) - g(10)} from 10 to 100, +${g(1000) - g(100)} from 100 to 1,000 (O(log n): about equal steps per 10×; ~3.3 heap levels each).\n`,
  );
  const per = (x: "gpt" | "sd") =>
    Math.round(Number(byGroups.get(64)![x] - byGroups.get(1)![x]) / 63).toLocaleString("en-US");
  console.log(
    `createTask grows by ~${per("gpt")} gas (GPT) / ~${per("sd")} gas (SD) per node group with an available node; maxGroups (64 by default) bounds it.\n`,
  );
  writeResults("gas", {
    rows: rows.map(([name, gas]) => ({ name, gas })),
    fullTask: {
      gpt: { gas: total, original: ORIGINAL.gptTask },
      sd: { gas: sd.total, original: ORIGINAL.sdTask, resultBytes: 48 },
      targetShare: TARGET_SHARE,
    },
  });
} finally {
  await anvil.stop();
}
