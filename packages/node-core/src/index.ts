export { GgufFormatError, NodeCoreError, type NodeCoreErrorParameters } from "./errors.js";
export * from "./executor/index.js";
export * from "./gguf/index.js";
export * from "./models/index.js";
export * from "./node/index.js";
export * from "./quantize/index.js";
export * from "./sd/index.js";
export * from "./testModels/index.js";
