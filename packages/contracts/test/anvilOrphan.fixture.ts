// Started by anvil.test.ts in a child process: starts anvil, prints its pid, and never calls stop().
// `exit` leaves by process.exit(), `drain` by running out of work, `signal` waits to be killed by SIGTERM.
import { startAnvil } from "../src/testing/anvil.js";

const mode = process.argv[2] ?? "exit";
const anvil = await startAnvil({ accounts: 1 });
console.log(JSON.stringify({ pid: anvil.pid }));
if (mode === "exit") process.exit(0);
if (mode === "signal") setInterval(() => {}, 1_000);
