import type { BridgeSettings } from "./bridge.js";

export type StoredSettings = BridgeSettings & { model: string };

const KEYS = {
  url: "crynux-chat.bridgeUrl",
  apiKey: "crynux-chat.apiKey",
  model: "crynux-chat.model",
} as const;

/**
 * The saved settings, else what the dev server was started with (`VITE_CRYNUX_BRIDGE_URL`,
 * `VITE_CRYNUX_API_KEY`, baked in at build time), else the bridge's default address.
 */
export function loadSettings(storage: Storage = localStorage): StoredSettings {
  const env = import.meta.env;
  return {
    url: storage.getItem(KEYS.url) ?? (env.VITE_CRYNUX_BRIDGE_URL || "http://127.0.0.1:8090"),
    apiKey: storage.getItem(KEYS.apiKey) ?? (env.VITE_CRYNUX_API_KEY || ""),
    model: storage.getItem(KEYS.model) ?? "",
  };
}

/** Kept in this browser only: the key goes nowhere but to the bridge. */
export function saveSettings(settings: Partial<StoredSettings>, storage: Storage = localStorage): void {
  for (const name of ["url", "apiKey", "model"] as const) {
    const value = settings[name];
    if (value !== undefined) storage.setItem(KEYS[name], value);
  }
}
