import fc from "fast-check";
import {
  type Abi,
  type AbiFunction,
  type Address,
  getAddress,
  type Hex,
  keccak256,
  toHex,
  zeroAddress,
} from "viem";
import { describe, expect, test } from "vitest";
import { recordTrial } from "../../../test-support/reliability.js";
import { taskCommitment } from "../src/deploy.js";
import {
  Actor,
  allowedTransitions,
  type Call,
  type ContractName,
  checkInvariants,
  contractAbis,
  joinArgs,
  sendAnyway,
} from "./helpers/adversary.js";
import { CNX, GPT, SD, STAKE, Status, TaskState, useCrynux } from "./helpers/crynux.js";

const crynux = useCrynux({ queueSizeLimit: 4 });

const OWNER = 0;
const NODES = [1, 2, 3, 4, 5, 6];
const CREATORS = [20, 21];
const STRANGER = 9;
const OPERATOR = 10;
const R1: Hex = keccak256(toHex("fuzz result 1"));
const R2: Hex = keccak256(toHex("fuzz result 2"));
// joins go to the main group twice as often as to the small one, so that GPT tasks find 3 nodes of a group
const GROUPS = [joinArgs(), joinArgs(), joinArgs("B", 16n, "rt")];

/** Every state-changing function of every contract, from the generated ABIs. */
const FUNCTIONS: { contract: ContractName; fn: AbiFunction }[] = (
  Object.entries(contractAbis) as [ContractName, Abi][]
).flatMap(([contract, abi]) =>
  abi
    .filter(
      (x): x is AbiFunction =>
        x.type === "function" && (x.stateMutability === "nonpayable" || x.stateMutability === "payable"),
    )
    .map((fn) => ({ contract, fn })),
);

/** What an honest-or-not node would disclose for a round: mostly agreement, sometimes a cheat or an error. */
function resultOf(taskId: bigint, round: number): Hex {
  const k = Number((taskId * 3n + BigInt(round)) % 11n);
  return k === 4 ? R2 : k === 7 ? "0x" : R1;
}
const nonceOf = (taskId: bigint, round: number): Hex => keccak256(toHex(`fuzz nonce ${taskId} ${round}`));

/**
 * One generated step: a raw ABI call with random arguments, the next step of an honest run of some task
 * ("advance"), a plausible participant call ("smart"), a clock jump, or a new payment behaviour of the actor.
 */
type Step = {
  kind: "raw" | "advance" | "smart" | "warp" | "actorMode";
  fn: number;
  sender: number;
  seeds: number[];
  value: number;
  smart: boolean;
};

const stepArb: fc.Arbitrary<Step> = fc.record({
  kind: fc.oneof(
    { weight: 5, arbitrary: fc.constant("raw" as const) },
    { weight: 8, arbitrary: fc.constant("advance" as const) },
    { weight: 5, arbitrary: fc.constant("smart" as const) },
    { weight: 2, arbitrary: fc.constant("warp" as const) },
    { weight: 1, arbitrary: fc.constant("actorMode" as const) },
  ),
  fn: fc.nat(),
  sender: fc.nat(),
  seeds: fc.array(fc.nat(), { minLength: 8, maxLength: 8 }),
  value: fc.nat(),
  smart: fc.boolean(),
});

describe("fuzzing every external function", () => {
  test("the invariant check notices corrupted books and counters", async () => {
    const c = crynux();
    for (const i of [1, 2, 3]) await c.join(i);
    await c.createTask(20, { taskType: GPT });
    const everyone = [...NODES, ...CREATORS].map((i) => c.account(i));
    await checkInvariants(c, everyone);
    const snapshot = await c.anvil.testClient.snapshot();
    // ETH the books do not account for
    await c.anvil.testClient.setBalance({ address: c.addr.task, value: (await c.balance(c.addr.task)) + 1n });
    await expect(checkInvariants(c, everyone)).rejects.toThrow(/Task balance = escrow \+ owed/);
    await c.anvil.testClient.revert({ id: snapshot });
    // NetworkStats' packed counters (slot 1, after Ownable's owner) off by one busy node
    const slot = `0x${"0".repeat(63)}1` as Hex;
    const counters = BigInt(
      (await c.anvil.publicClient.getStorageAt({ address: c.addr.networkStats, slot }))!,
    );
    await c.anvil.testClient.setStorageAt({
      address: c.addr.networkStats,
      index: slot,
      value: `0x${(counters + (1n << 64n)).toString(16).padStart(64, "0")}`,
    });
    await expect(checkInvariants(c, everyone)).rejects.toThrow(/NetworkStats counters/);
  });

  test("random calls from random accounts keep the books, the node index and the counters consistent", {
    timeout: 600_000,
  }, async (context) => {
    const c = crynux();
    const actor = await Actor.deploy(c, OPERATOR, 2n * STAKE);
    const eoas = [OWNER, ...NODES, ...CREATORS, STRANGER];
    const senders: (number | Actor)[] = [...eoas, actor];
    const parties: Address[] = [...eoas.map((i) => c.account(i)), actor.address, c.account(OPERATOR)].map(
      (a) => getAddress(a),
    );
    const contracts = Object.values(c.addr).map((a) => getAddress(a));
    const everyone = [...new Set([...parties, ...contracts])];
    const addresses: Address[] = [...parties, ...contracts, zeroAddress];

    // the starting network: 4 nodes in one group, 1 in another, the actor in the first; a running task
    for (const i of [1, 2, 3, 4]) await c.join(i);
    await c.join(5, "B", 16n, "rt");
    await sendAnyway(c, {
      from: actor,
      contract: "node",
      functionName: "join",
      args: joinArgs(),
      value: STAKE,
    });
    await c.createTask(20, { taskType: GPT, fee: 30n * CNX });
    await checkInvariants(c, everyone);
    const base = await c.anvil.testClient.snapshot();
    let snapshot = base;

    const totalEth = async () =>
      (await Promise.all(everyone.map((a) => c.balance(a)))).reduce((s, b) => s + b, 0n);

    const succeeded = new Map<string, number>();
    const tried = new Map<string, number>();
    const finalStates = new Map<number, number>();
    let calls = 0;
    let sequences = 0;

    /** A random but type-correct argument, biased towards values the contracts care about. */
    const argFor = (type: string, name: string, seed: number, taskCount: bigint): unknown => {
      const pick = <T>(xs: readonly T[]) => xs[seed % xs.length]!;
      if (type === "address") return pick(addresses);
      if (type === "bool") return seed % 2 === 0;
      if (type === "string") return pick(["NVIDIA GeForce RTX 4090", "B", "", "llama@1/cpu/t1", "rt"]);
      if (type === "bytes") return pick([R1, R2, "0x", "0x0123456789abcdef", `${R1}00`]);
      if (type === "bytes32") {
        const id = BigInt(1 + (seed % Math.max(1, Number(taskCount))));
        const r = seed % 3;
        return pick([
          taskCommitment(resultOf(id, r), nonceOf(id, r)),
          nonceOf(id, r),
          R1,
          `0x${"00".repeat(32)}`,
          keccak256(toHex(seed)),
        ]);
      }
      if (type.startsWith("int")) return pick([-1n, 0n, 1n, 3n, -3n]);
      if (type === "uint8") return pick([0, 1, 2, 3, 255]);
      if (/taskid/i.test(name)) return BigInt(seed % (Number(taskCount) + 2));
      if (/round/i.test(name)) return BigInt(seed % 4);
      return pick([0n, 1n, 2n, 3n, 24n, 600n, 900n, STAKE, 30n * CNX, 2n ** 96n, 2n ** 256n - 1n]);
    };
    const valueFor = (seed: number) => [0n, 0n, STAKE, CNX, 30n * CNX, 1n][seed % 6]!;

    /** A call a participant could plausibly make now: the right node, round, commitment or stake. */
    const smartCall = async (step: Step, taskCount: bigint): Promise<Call | undefined> => {
      const [s0 = 0, s1 = 0, s2 = 0] = step.seeds;
      const id = BigInt(1 + (s0 % Math.max(1, Number(taskCount))));
      const choice = step.kind === "advance" ? 0 : step.fn % 10;
      if (choice <= 4 && taskCount > 0n) {
        // mostly a task that is under way: that is where commitments and disclosures matter
        const active: bigint[] = [];
        for (let k = 1n; k <= taskCount; k++) {
          const state = (await c.getTask(k)).state;
          if (state === TaskState.RUNNING || state === TaskState.SUCCESS) active.push(k);
        }
        const taskId = active.length > 0 && s2 % 4 !== 0 && choice !== 4 ? active[s0 % active.length]! : id;
        const t = await c.getTask(taskId);
        const senderOf = (node: Address): number | Actor =>
          getAddress(node) === actor.address ? actor : c.indexOf(node);
        if (choice === 4 && (t.nodes[0] === zeroAddress || s2 % 3 !== 0))
          return { from: senderOf(t.creator), contract: "task", functionName: "cancelTask", args: [taskId] };
        if (t.nodes[0] === zeroAddress) return undefined;
        const rounds = await Promise.all(
          [0n, 1n, 2n].map((r) =>
            c.read<[Address, number, number, number, Hex]>("task", "getRound", [taskId, r]),
          ),
        );
        // the next step of an honest protocol run, or (choice 3) a round picked at random
        let round = s1 % 3;
        let action: "commit" | "disclose" | "upload" | "cancel" = "commit";
        if (choice <= 2) {
          const uncommitted = rounds.findIndex((r, k) => r[1] === 0 && (k + Number(taskId)) % 7 !== 0);
          const undisclosed = rounds.findIndex((r) => r[1] !== 0 && r[2] === 0);
          if (t.state === TaskState.SUCCESS && s1 % 2 === 0) {
            action = "upload";
            round = t.resultRound;
          } else if (uncommitted >= 0) round = uncommitted;
          else if (undisclosed >= 0) {
            action = "disclose";
            round = undisclosed;
          } else return undefined;
        } else if (choice === 3) action = s2 % 2 === 0 ? "commit" : "disclose";
        else action = "cancel";
        const from = senderOf(t.nodes[round]!);
        const result = resultOf(taskId, round);
        if (action === "commit")
          return {
            from,
            contract: "task",
            functionName: "submitCommitment",
            args: [taskId, BigInt(round), taskCommitment(result, nonceOf(taskId, round))],
          };
        if (action === "disclose")
          return result === "0x"
            ? {
                from,
                contract: "task",
                functionName: "reportTaskError",
                args: [taskId, BigInt(round), nonceOf(taskId, round)],
              }
            : {
                from,
                contract: "task",
                functionName: "disclose",
                args: [taskId, BigInt(round), result, nonceOf(taskId, round)],
              };
        if (action === "upload")
          return {
            from,
            contract: "task",
            functionName: "reportResultsUploaded",
            args: [taskId, BigInt(round)],
          };
        return { from, contract: "task", functionName: "cancelTask", args: [taskId] };
      }
      if (choice <= 6) {
        const from = CREATORS[s1 % CREATORS.length]!;
        const fromActor = s2 % 5 === 0;
        return {
          from: fromActor ? actor : from,
          contract: "task",
          functionName: "createTask",
          args: [
            s2 % 3 === 0 ? SD : GPT,
            keccak256(toHex(`fuzz task ${s0} ${s1}`)),
            `0x${"00".repeat(32)}`,
            [0n, 16n, 24n][s0 % 3]!,
            1n + BigInt(s1 % 3),
          ],
          value: BigInt(1 + (s0 % 60)) * CNX,
        };
      }
      const nodeSender = s1 % 7 === 6 ? actor : NODES[s1 % NODES.length]!;
      if (choice === 7) {
        const candidates: (number | Actor)[] = [];
        for (const n of [...NODES, actor])
          if ((await c.status(typeof n === "number" ? n : n.address)) === Status.QUIT) candidates.push(n);
        return {
          from: candidates.length > 0 ? candidates[s1 % candidates.length]! : nodeSender,
          contract: "node",
          functionName: "join",
          args: GROUPS[s2 % GROUPS.length]!,
          value: await c.read<bigint>("node", "stakeAmount"),
        };
      }
      if (choice === 9 && s0 % 2 === 0) {
        // the owner retunes the system mid-flight: the books must hold under any configuration
        const settings: [ContractName, string, unknown[]][] = [
          ["node", "setStakeAmount", [[STAKE, 300n * CNX, 1n][s1 % 3]!]],
          ["node", "setAbsencePenalty", [[0n, 40n * CNX, 500n * CNX][s1 % 3]!]],
          ["node", "setTreasury", [[actor.address, c.account(STRANGER), c.addr.treasury][s1 % 3]!]],
          ["node", "setMaxGroups", [BigInt(1 + (s1 % 3))]],
          ["qos", "setKickoutThreshold", [[20n, 45n, 0n][s1 % 3]!]],
          ["task", "setTimeouts", [[600n, 60n, 300n][s1 % 3]!, [900n, 120n, 301n][s1 % 3]!]],
          ["task", "setDistanceThreshold", [BigInt(1 + (s1 % 65))]],
          ["task", "setTimeEstimate", [s1 % 2, BigInt(1 + s1 * 1000), BigInt(s1 % 100)]],
          ["taskQueue", "setSizeLimit", [BigInt(s1 % 5)]],
          ["treasury", "withdraw", [c.account(STRANGER), CNX]],
        ];
        const [contract, functionName, args] = settings[s2 % settings.length]!;
        return { from: OWNER, contract, functionName, args };
      }
      const action = (["pause", "resume", "quit", "withdraw"] as const)[s2 % 4]!;
      if (action === "withdraw" && s0 % 2 === 0)
        return { from: nodeSender, contract: "task", functionName: "withdraw" };
      return { from: nodeSender, contract: "node", functionName: action };
    };

    await fc.assert(
      fc.asyncProperty(fc.array(stepArb, { minLength: 6, maxLength: 18 }), async (steps) => {
        await c.anvil.testClient.revert({ id: snapshot });
        snapshot = await c.anvil.testClient.snapshot();
        sequences++;
        let eth = await totalEth();
        let states = await checkInvariants(c, everyone);
        for (const step of steps) {
          const taskCount = await c.read<bigint>("task", "totalTasks");
          let call: Call | undefined;
          if (step.kind === "warp") {
            await c.anvil.testClient.increaseTime({ seconds: [301, 601, 901][step.value % 3]! });
            await c.anvil.testClient.mine({ blocks: 1 });
            continue;
          }
          if (step.kind === "actorMode") {
            const mode =
              step.value % 3 === 0
                ? Actor.ACCEPT
                : step.value % 3 === 1
                  ? Actor.REFUSE
                  : Actor.REENTER_ALWAYS;
            const target = FUNCTIONS[step.fn % FUNCTIONS.length]!;
            await actor.arm(
              mode,
              target.contract,
              target.fn.name,
              target.fn.inputs.map((input, k) =>
                argFor(input.type, input.name ?? "", step.seeds[k] ?? 0, taskCount),
              ),
            );
            eth = await totalEth();
            continue;
          }
          if (step.kind === "smart" || step.kind === "advance") call = await smartCall(step, taskCount);
          if (!call) {
            const { contract, fn } = FUNCTIONS[step.fn % FUNCTIONS.length]!;
            const smartValue =
              fn.name === "join"
                ? await c.read<bigint>("node", "stakeAmount")
                : BigInt(1 + (step.value % 60)) * CNX;
            call = {
              from: senders[step.sender % senders.length]!,
              contract,
              functionName: fn.name,
              args: fn.inputs.map((input, k) =>
                argFor(input.type, input.name ?? "", step.seeds[k] ?? 0, taskCount),
              ),
              value:
                fn.stateMutability === "payable"
                  ? step.smart
                    ? smartValue
                    : valueFor(step.value)
                  : undefined,
            };
          }
          // ETH may only leave the system towards addresses the conservation check sums
          if (
            call.contract === "treasury" &&
            call.functionName === "withdraw" &&
            call.args?.[0] === zeroAddress
          )
            continue;
          let receipt: Awaited<ReturnType<typeof sendAnyway>>;
          try {
            receipt = await sendAnyway(c, call);
          } catch {
            // rejected before it was mined (e.g. a value above the sender's balance): nothing happened
            continue;
          }
          calls++;
          const key = `${call.contract}.${call.functionName}`;
          tried.set(key, (tried.get(key) ?? 0) + 1);
          if (receipt.status === "success") succeeded.set(key, (succeeded.get(key) ?? 0) + 1);
          eth -= receipt.gasUsed * receipt.effectiveGasPrice;
          expect(await totalEth(), `no ETH created or lost by ${key}`).toBe(eth);
          const next = await checkInvariants(c, everyone);
          for (const [id, state] of next) {
            const before = states.get(id) ?? TaskState.NONE;
            if (state !== before)
              expect(allowedTransitions[before], `task ${id}: ${before} -> ${state} by ${key}`).toContain(
                state,
              );
          }
          states = next;
        }
        for (const state of states.values()) finalStates.set(state, (finalStates.get(state) ?? 0) + 1);
      }),
      { numRuns: 28, seed: 11 },
    );
    // and every function once more, from a sender chosen in turn, so that none is left untried
    for (const [k, { contract, fn }] of FUNCTIONS.entries()) {
      const taskCount = await c.read<bigint>("task", "totalTasks");
      const call: Call = {
        from: senders[k % senders.length]!,
        contract,
        functionName: fn.name,
        args: fn.inputs.map((input, j) => argFor(input.type, input.name ?? "", k * 7 + j, taskCount)),
        value: fn.stateMutability === "payable" ? valueFor(k) : undefined,
      };
      if (contract === "treasury" && fn.name === "withdraw") call.args = [c.account(STRANGER), 1n];
      const eth = await totalEth();
      const receipt = await sendAnyway(c, call);
      calls++;
      tried.set(`${contract}.${fn.name}`, (tried.get(`${contract}.${fn.name}`) ?? 0) + 1);
      expect(await totalEth(), `no ETH created or lost by ${fn.name}`).toBe(
        eth - receipt.gasUsed * receipt.effectiveGasPrice,
      );
      await checkInvariants(c, everyone);
    }
    const line = (m: Map<string, number>) =>
      [...m.entries()]
        .sort()
        .map(([k, v]) => `${k} ${v}`)
        .join(", ");
    console.log(
      `fuzz: ${sequences} sequences, ${calls} calls\nsucceeded: ${line(succeeded)}\ntried: ${line(tried)}`,
    );
    console.log(`final task states: ${JSON.stringify([...finalStates.entries()].sort())}`);
    // not vacuous: the calls that move money and tasks did succeed, and every function was tried
    for (const key of [
      "task.createTask",
      "task.submitCommitment",
      "task.disclose",
      "task.reportResultsUploaded",
      "task.cancelTask",
      "node.join",
      "node.quit",
    ])
      expect(succeeded.get(key) ?? 0, `${key} succeeded at least once`).toBeGreaterThan(0);
    expect(tried.size, "functions tried").toBe(FUNCTIONS.length);
    recordTrial(context, {
      area: "Contracts",
      fault: `random calls to every external function (${FUNCTIONS.length}) from random accounts and a contract, random type-correct arguments, clock jumps`,
      runs: calls,
      expected:
        "after every call: balances = stakes/escrow + owed, no ETH created, no busy node without its task, counters and node index agree, legal task transitions",
    });
  });
});
