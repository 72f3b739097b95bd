export * from "./chain/index.js";
export * from "./errors.js";
export * from "./relay/index.js";
