#!/usr/bin/env node
// The `crynux-deploy` binary (dist/cli/deploy.js). From the sources: npx tsx --conditions=source
// packages/contracts/src/cli/deploy.ts --help
import { runDeployCommand } from "./deployCommand.js";

process.exitCode = await runDeployCommand({ argv: process.argv.slice(2) });
