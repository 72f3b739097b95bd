export {
  type CrynuxChainConfig,
  crynuxChainConfigSchema,
  crynuxDevnet,
  crynuxNativeCurrency,
  defineCrynuxChain,
  InvalidChainConfigError,
} from "./chains.js";
// deployCrynux, groupKey, taskCommitment.
export * from "./deploy.js";
export { ContractsError } from "./errors.js";
// ABIs (`<name>Abi`, `as const`), creation bytecode (`<name>Bytecode`) and `contractsBuildInfo`,
// written by `npm run contracts:build` from contracts/src.
export * from "./generated/index.js";
export * from "./states.js";
