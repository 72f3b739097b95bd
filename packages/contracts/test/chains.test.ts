import { describe, expect, test } from "vitest";
import { crynuxDevnet, defineCrynuxChain, InvalidChainConfigError } from "../src/index.js";

describe("chains", () => {
  test("crynuxDevnet is the local anvil chain paying in CNX", () => {
    expect(crynuxDevnet.id).toBe(31337);
    expect(crynuxDevnet.nativeCurrency).toEqual({ name: "Crynux", symbol: "CNX", decimals: 18 });
    expect(crynuxDevnet.rpcUrls.default.http).toEqual(["http://127.0.0.1:8545"]);
  });

  test("defineCrynuxChain builds a viem chain from a validated config", () => {
    const chain = defineCrynuxChain({
      id: 10_000,
      name: "Crynux Rollapp",
      rpcUrl: "https://rpc.example.org",
      webSocketUrl: "wss://ws.example.org",
      explorerUrl: "https://explorer.example.org",
    });
    expect(chain.id).toBe(10_000);
    expect(chain.nativeCurrency.symbol).toBe("CNX");
    expect(chain.rpcUrls.default).toEqual({
      http: ["https://rpc.example.org"],
      webSocket: ["wss://ws.example.org"],
    });
    expect(chain.blockExplorers?.default.url).toBe("https://explorer.example.org");
  });

  test.each([
    { id: 0, name: "x", rpcUrl: "http://127.0.0.1:8545" },
    { id: 1.5, name: "x", rpcUrl: "http://127.0.0.1:8545" },
    { id: 1, name: " ", rpcUrl: "http://127.0.0.1:8545" },
    { id: 1, name: "x", rpcUrl: "ftp://example.org" },
    { id: 1, name: "x", rpcUrl: "not a url" },
    { id: 1, name: "x", rpcUrl: "http://127.0.0.1:8545", explorerUrl: "javascript:alert(1)" },
  ])("rejects %o", (config) => {
    expect(() => defineCrynuxChain(config)).toThrow(InvalidChainConfigError);
  });
});
