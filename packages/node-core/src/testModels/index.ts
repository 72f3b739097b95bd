export * from "./generate.js";
