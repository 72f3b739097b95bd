import net, { type Socket } from "node:net";
import { useAnvil } from "@crynux/contracts/testing/vitest";
import { createPublicClient, http } from "viem";
import { afterEach, describe, expect, test, vi } from "vitest";
import { createHeadWatcher, type HeadWatcher, HeadWatcherError, waitForReceipt } from "../src/chain/index.js";

const anvil = useAnvil({ accounts: 2 });
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** A TCP proxy in front of anvil whose connections the test can cut, as a network drop would. */
async function startProxy(targetPort: number) {
  const sockets = new Set<Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(targetPort, "127.0.0.1");
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `ws://127.0.0.1:${port}`,
    /** Drops every open connection (the server keeps listening). */
    cut() {
      for (const s of sockets) s.destroy();
    },
    connections: () => sockets.size,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const activeHandles = () =>
  process.getActiveResourcesInfo().filter((r) => r === "Timeout" || r === "TCPSocketWrap").length;

function watch(url: string, errors: HeadWatcherError[]): HeadWatcher {
  const heads = createHeadWatcher({
    url,
    onError: (error) => errors.push(error),
    reconnectDelayMs: 50,
    maxReconnectDelayMs: 200,
  });
  cleanups.push(() => heads.close());
  return heads;
}

describe("createHeadWatcher", () => {
  test("fans one subscription out to its listeners; an unsubscribed listener is not called", async () => {
    const errors: HeadWatcherError[] = [];
    const heads = watch(anvil().rpcUrl.replace(/^http/, "ws"), errors);
    let a = 0;
    let b = 0;
    heads.subscribe(() => a++);
    const stopB = heads.subscribe(() => b++);
    await vi.waitFor(() => expect(heads.connected).toBe(true), { timeout: 10_000, interval: 10 });
    const [a0, b0] = [a, b];
    await anvil().testClient.mine({ blocks: 1 });
    await vi.waitFor(() => expect([a - a0, b - b0]).toEqual([1, 1]), { timeout: 10_000, interval: 10 });
    stopB();
    await anvil().testClient.mine({ blocks: 2 });
    await vi.waitFor(() => expect(a - a0).toBe(3), { timeout: 10_000, interval: 10 });
    expect(b - b0).toBe(1);
    heads.close();
    expect(heads.connected).toBe(false);
    await anvil().testClient.mine({ blocks: 1 });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(a - a0).toBe(3);
    expect(errors).toEqual([]);
  });

  test("reconnects after the connection drops, and tells the listeners once it is back", async () => {
    const proxy = await startProxy(anvil().port);
    cleanups.push(() => proxy.close());
    const errors: HeadWatcherError[] = [];
    const heads = watch(proxy.url, errors);
    let seen = 0;
    heads.subscribe(() => seen++);
    await vi.waitFor(() => expect(heads.connected).toBe(true), { timeout: 10_000, interval: 10 });

    proxy.cut();
    await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0), { timeout: 10_000, interval: 10 });
    expect(errors[0]).toBeInstanceOf(HeadWatcherError);
    expect(errors[0]!.message).toContain("closed");
    const before = seen;
    await vi.waitFor(() => expect(heads.connected).toBe(true), { timeout: 10_000, interval: 10 });
    // back: one call for the heads that may have been missed, then every new head again
    expect(seen).toBeGreaterThan(before);
    const back = seen;
    await anvil().testClient.mine({ blocks: 1 });
    await vi.waitFor(() => expect(seen).toBe(back + 1), { timeout: 10_000, interval: 10 });
  });

  test("an endpoint that refuses connections: errors with backoff, and close() ends the retries at once", async () => {
    const baseline = activeHandles();
    const errors: HeadWatcherError[] = [];
    const heads = watch(`ws://127.0.0.1:${await deadPort()}`, errors);
    heads.subscribe(() => {});
    await vi.waitFor(() => expect(errors.length).toBeGreaterThanOrEqual(3), {
      timeout: 10_000,
      interval: 10,
    });
    expect(heads.connected).toBe(false);
    heads.close();
    const count = errors.length;
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(errors.length).toBe(count);
    // no reconnect timer and no socket is left behind to keep the process alive
    expect(activeHandles()).toBeLessThanOrEqual(baseline);
  });

  test("an endpoint that refuses eth_subscribe is reported", async () => {
    const { WebSocketServer } = await import("ws");
    const server = new WebSocketServer({ host: "127.0.0.1", port: 0 });
    await new Promise((resolve) => server.once("listening", resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    server.on("connection", (socket) =>
      socket.on("message", (data) => {
        const { id } = JSON.parse(String(data)) as { id: number };
        socket.send(
          JSON.stringify({
            jsonrpc: "2.0",
            id,
            error: { code: -32601, message: "the method eth_subscribe does not exist" },
          }),
        );
      }),
    );
    const errors: HeadWatcherError[] = [];
    const heads = watch(`ws://127.0.0.1:${(server.address() as net.AddressInfo).port}`, errors);
    heads.subscribe(() => {});
    await vi.waitFor(() => expect(errors.length).toBeGreaterThan(0), { timeout: 10_000, interval: 10 });
    expect(errors[0]!.message).toContain('refused eth_subscribe("newHeads")');
    expect(errors[0]!.details).toContain("does not exist");
    expect(heads.connected).toBe(false);
  });

  test("refuses a URL that is not ws(s)", () => {
    expect(() => createHeadWatcher({ url: anvil().rpcUrl })).toThrow(HeadWatcherError);
    expect(() => createHeadWatcher({ url: "not a url" })).toThrow(/must be a ws\(s\) URL/);
  });
});

describe("waitForReceipt", () => {
  test("asks for the receipt on every new head; aborts with the signal's reason", async () => {
    const { testClient, rpcUrl } = anvil();
    // polls so slow that only a pushed head can find the receipt within the test
    const slow = createPublicClient({
      chain: anvil().chain,
      transport: http(rpcUrl),
      pollingInterval: 600_000,
    });
    const errors: HeadWatcherError[] = [];
    const heads = watch(rpcUrl.replace(/^http/, "ws"), errors);
    heads.subscribe(() => {});
    await vi.waitFor(() => expect(heads.connected).toBe(true), { timeout: 10_000, interval: 10 });
    await testClient.setAutomine(false);
    cleanups.push(() => testClient.setAutomine(true));
    const wallet = anvil().walletClient(1);
    const hash = await wallet.sendTransaction({ to: wallet.account.address, value: 1n });
    const waiting = waitForReceipt(slow, { hash, heads });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await testClient.mine({ blocks: 1 });
    const receipt = await waiting;
    expect([receipt.transactionHash, receipt.status]).toEqual([hash, "success"]);
    // mined already: answered by the first lookup
    expect((await waitForReceipt(slow, { hash })).blockNumber).toBe(receipt.blockNumber);

    const pending = await wallet.sendTransaction({ to: wallet.account.address, value: 2n });
    const controller = new AbortController();
    const aborted = waitForReceipt(slow, { hash: pending, heads, signal: controller.signal });
    controller.abort(new Error("given up"));
    await expect(aborted).rejects.toThrow("given up");
    await testClient.mine({ blocks: 1 });
    expect(errors).toEqual([]);
  });
});
