export { type FaucetServer, type StartFaucetServerOptions, startFaucetServer } from "./faucet.js";
export { type DevnetModel, defaultCacheDir, type PrepareModelOptions, prepareModel } from "./model.js";
export {
  childPids,
  type Devnet,
  type DevnetAccount,
  devnetEnv,
  type StartDevnetOptions,
  startDevnet,
} from "./network.js";
export * from "./scenarios.js";
