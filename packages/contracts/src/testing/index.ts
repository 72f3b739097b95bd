export {
  ANVIL_MNEMONIC,
  type AnvilAccount,
  AnvilError,
  type AnvilInstance,
  anvilBinaryPath,
  type StartAnvilOptions,
  startAnvil,
  withAnvil,
} from "./anvil.js";
