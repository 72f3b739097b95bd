export * from "./actions/index.js";
export * from "./chain/index.js";
export {
  type CreateCrynuxClientParameters,
  type CrynuxClient,
  createCrynuxClient,
} from "./createCrynuxClient.js";
export * from "./errors.js";
export * from "./relay/index.js";
