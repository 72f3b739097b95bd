import type { BridgeTaskStatus } from "./bridge.js";

/**
 * Where a message stands. The bridge tells the page when it has recorded the request and paid the task (the
 * response headers, `GET /v1/crynux/tasks/:id`); while the nodes work it only sends keep-alive comments, then
 * the whole answer.
 */
export type Stage = "idle" | "sending" | "recorded" | "paid" | "waiting" | "received" | "failed";

const ORDER: readonly Stage[] = ["idle", "sending", "recorded", "paid", "waiting", "received"];

/** Wei (decimal string) as CNX, without trailing zeros. */
export function formatCnx(wei: string): string {
  const value = BigInt(wei);
  const unit = 10n ** 18n;
  const fraction = (value % unit).toString().padStart(18, "0").replace(/0+$/, "");
  return `${value / unit}${fraction ? `.${fraction}` : ""}`;
}

/** A fee as people read it: CNX, or wei when it is too small for CNX digits to mean anything (devnets). */
export function formatFee(wei: string): string {
  return BigInt(wei) < 10n ** 12n ? `${wei} wei` : `${formatCnx(wei)} CNX`;
}

export type Progress = ReturnType<typeof createProgress>;

/** Shows the current stage in `current` (its `data-stage` names it) and logs each stage once in `log`. */
export function createProgress(current: HTMLElement, log: HTMLOListElement) {
  let stage: Stage = "idle";
  let startedAt = 0;
  let keepAlives = 0;
  let ticker: ReturnType<typeof setInterval> | undefined;
  let task: { taskId: string | null; txHash: string | null; fee: string | null } = {
    taskId: null,
    txHash: null,
    fee: null,
  };
  let paidEntry: HTMLLIElement | undefined;

  const elapsed = () => (performance.now() - startedAt) / 1000;

  const entry = (name: Stage | "note", text: string): HTMLLIElement => {
    const item = document.createElement("li");
    item.dataset["stage"] = name;
    const time = document.createElement("time");
    time.textContent = `+${elapsed().toFixed(1)} s`;
    const label = document.createElement("span");
    label.textContent = text;
    item.append(time, " ", label);
    log.append(item);
    return item;
  };

  const describe = (): string => {
    const seconds = `${Math.floor(elapsed())} s`;
    switch (stage) {
      case "idle":
        return "No task yet.";
      case "sending":
        return `Sending to the bridge… ${seconds}`;
      case "recorded":
        return `The bridge recorded the request and is paying the task… ${seconds}`;
      case "paid":
      case "waiting":
        return `Task${task.taskId ? ` #${task.taskId}` : ""} is on the network: nodes run the model, then commit and disclose their results… ${seconds}${keepAlives > 0 ? ` (bridge alive ×${keepAlives})` : ""}`;
      case "received":
        return `Answered${task.taskId ? ` by task #${task.taskId}` : ""} in ${elapsed().toFixed(1)} s.`;
      case "failed":
        return "Failed: see the error.";
    }
  };

  const render = () => {
    current.dataset["stage"] = stage;
    current.textContent = describe();
  };

  /** Moves forward only: the status poll and the stream may report the same stage in either order. */
  const advance = (next: Stage): boolean => {
    if (stage === "failed" || ORDER.indexOf(next) <= ORDER.indexOf(stage)) return false;
    stage = next;
    render();
    return true;
  };

  const paidText = () =>
    `Paid: Crynux task${task.taskId ? ` #${task.taskId}` : ""} created on-chain${task.fee !== null ? `, fee ${formatFee(task.fee)}` : ""}${task.txHash ? ` (tx ${task.txHash.slice(0, 10)}…)` : ""}.`;

  const stopTicker = () => {
    if (ticker !== undefined) clearInterval(ticker);
    ticker = undefined;
  };

  const paid = (update: Partial<typeof task>) => {
    task = {
      taskId: update.taskId ?? task.taskId,
      txHash: update.txHash ?? task.txHash,
      fee: update.fee ?? task.fee,
    };
    if (advance("paid")) paidEntry = entry("paid", paidText());
    else if (paidEntry) paidEntry.querySelector("span")!.textContent = paidText();
    if (advance("waiting")) entry("waiting", "Waiting for the nodes: the bridge keeps the connection alive.");
    render();
  };

  return {
    get stage(): Stage {
      return stage;
    },
    start(requestId: string) {
      stopTicker();
      log.replaceChildren();
      stage = "idle";
      startedAt = performance.now();
      keepAlives = 0;
      task = { taskId: null, txHash: null, fee: null };
      paidEntry = undefined;
      advance("sending");
      entry("sending", `Sent to the bridge (request ${requestId}).`);
      ticker = setInterval(render, 1000);
    },
    bridgeStatus(status: BridgeTaskStatus) {
      if (status.status === "recorded") {
        if (advance("recorded")) entry("recorded", "Recorded by the bridge; paying the task.");
      } else if (status.status === "paid" || status.status === "succeeded") {
        paid({ taskId: status.taskId, txHash: status.txHash, fee: status.fee });
      }
      // "failed" arrives through the stream, with its message.
    },
    paid,
    keepAlive() {
      keepAlives++;
      render();
    },
    /** Returns the seconds since `start`. */
    received(taskId: string | null): number {
      const seconds = elapsed();
      if (taskId) task.taskId = taskId;
      advance("received");
      entry("received", `Answer received${task.taskId ? ` (task #${task.taskId})` : ""}.`);
      stopTicker();
      render();
      return seconds;
    },
    failed(message: string) {
      stage = "failed";
      entry("failed", message);
      stopTicker();
      render();
    },
    note(text: string) {
      entry("note", text);
    },
    reset() {
      stopTicker();
      log.replaceChildren();
      stage = "idle";
      render();
    },
  };
}
