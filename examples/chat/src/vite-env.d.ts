// Only what the page reads: Vite replaces these at build time from the environment (VITE_ prefix).
interface ImportMetaEnv {
  readonly VITE_CRYNUX_BRIDGE_URL?: string;
  readonly VITE_CRYNUX_API_KEY?: string;
}

interface ImportMeta {
  readonly env: ImportMetaEnv;
}
