import { renameSync } from "node:fs";
import { join } from "node:path";
import type { CrynuxNode, NodeLogger, TaskActivity } from "@crynux/node-core";

/**
 * Test-only: the directory of armed fault points. Never set it on a real node: it lets whoever can write
 * there kill the process at a chosen point of a task.
 */
export const FAULT_DIR_ENV = "CRYNUX_NODE_FAULT_DIR";

/** Prefix of an arm file: `<dir>/kill-after-<point>` kills the first process that reaches `<point>`. */
export const KILL_AFTER = "kill-after-";

/**
 * The points a node process can be killed at, in task order: the node's persisted steps (`executed`,
 * `committed`, `disclosed`, `uploaded`, `done`, from the `taskStep` event) and the moments between them
 * (`taskActivity`): `args-received`, `sent-<functionName>` (e.g. `sent-submitCommitment`: broadcast, receipt
 * not seen), `upload-started`, `upload-done`.
 */
export function faultPointOf(event: { step: string } | TaskActivity): string {
  if ("step" in event) return event.step;
  switch (event.kind) {
    case "argsReceived":
      return "args-received";
    case "txSent":
      return `sent-${event.functionName}`;
    case "uploadStarted":
      return "upload-started";
    case "uploadDone":
      return "upload-done";
  }
}

/**
 * Makes the process SIGKILL itself at an armed point: when it reaches `<point>` and can rename
 * `<dir>/kill-after-<point>` to `<dir>/kill-after-<point>.fired.<pid>`, it dies at once, with no cleanup,
 * before the node goes on. The rename is atomic, so each arm file kills exactly one process, even when
 * several nodes share the directory; a restarted node finds the file gone and runs normally.
 *
 * The listeners are attached to the running node, so a point reached while the node was starting (a task
 * resumed at start) is not caught.
 */
export function armFaultInjection(node: Pick<CrynuxNode, "events">, dir: string, logger: NodeLogger): void {
  const reach = (point: string, taskId: bigint | string) => {
    const armed = join(dir, `${KILL_AFTER}${point}`);
    try {
      renameSync(armed, `${armed}.fired.${process.pid}`);
    } catch {
      // Not armed, or another process fired it first.
      return;
    }
    logger.warn("fault injection: kill -9", { point, taskId });
    process.kill(process.pid, "SIGKILL");
  };
  node.events.on("taskStep", (record) => reach(faultPointOf(record), record.taskId));
  node.events.on("taskActivity", (activity) => reach(faultPointOf(activity), activity.taskId));
  logger.warn("test-only fault injection is armed", { dir });
}
