import { defineConfig } from "vite";

/**
 * `CRYNUX_BRIDGE_PROXY=http://127.0.0.1:8090`: the dev server forwards `/v1` to that bridge, so the page can use
 * a bridge that allows no other origin (no `cors` setting) by calling its own origin.
 */
export default defineConfig(() => {
  const target = process.env["CRYNUX_BRIDGE_PROXY"];
  return {
    server: target ? { proxy: { "/v1": { target, changeOrigin: true } } } : {},
  };
});
