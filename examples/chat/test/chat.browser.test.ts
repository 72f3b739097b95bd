import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { extname, join, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { type RunningBridge, startBridge } from "@crynux/example-bridge";
import { type Devnet, startDevnet } from "@crynux/example-devnet";
import type { GptResponse } from "@crynux/tasks";
import { type Browser, chromium, type Page } from "playwright-core";
import { build, createServer as createViteServer, type ViteDevServer } from "vite";
import { afterAll, beforeAll, describe, expect, test } from "vitest";

const CHAT_DIR = fileURLToPath(new URL("..", import.meta.url));
const RESULTS_DIR = join(CHAT_DIR, "test-results");
const CHROMIUM = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium";
// CI installs chromium (.ci/run): there a missing browser is a failure, not a reason to skip.
const canRun = existsSync(CHROMIUM) || Boolean(process.env["CI"]);

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
};

/** Serves the built page from its own origin, as a static host would. */
async function serveDirectory(dir: string): Promise<{ url: string; server: Server }> {
  const root = resolve(dir);
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url ?? "/", "http://page").pathname);
    const file = resolve(root, `.${path === "/" ? "/index.html" : path}`);
    if (!file.startsWith(root + sep)) {
      response.writeHead(404).end();
      return;
    }
    readFile(file).then(
      (body) => {
        response.writeHead(200, {
          "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
        });
        response.end(body);
      },
      () => response.writeHead(404).end(),
    );
  });
  await new Promise<void>((done, fail) => {
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => done());
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

const closeServer = (server: Server) =>
  new Promise<void>((done) => {
    server.closeAllConnections();
    server.close(() => done());
  });

/** An address where nothing listens: a server's port, once the server is closed. */
async function closedPortUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", () => done()));
  const { port } = server.address() as AddressInfo;
  await closeServer(server);
  return `http://127.0.0.1:${port}`;
}

type SentChat = { model: string; stream: boolean; messages: { role: string; content: string }[] };

describe.skipIf(!canRun)("chat page in Chromium against a devnet bridge", { timeout: 600_000 }, () => {
  let devnet: Devnet;
  /** The devnet's chain, relay, models and key, served with CORS for the page's origin. */
  let bridge: RunningBridge;
  let page: Page;
  let browser: Browser;
  let site: { url: string; server: Server };
  let buildDir: string;
  let devServer: ViteDevServer | undefined;
  const sent: SentChat[] = [];
  const sentKeys: string[] = [];
  const pageErrors: Error[] = [];

  beforeAll(async () => {
    buildDir = await mkdtemp(join(tmpdir(), "crynux-chat-page-"));
    site = await serveDirectory(join(buildDir, "dist"));
    devnet = await startDevnet({ faucetPort: false });
    // A bridge of its own wallet: the devnet's bridge pays from another one, so their nonces never race.
    bridge = await startBridge(
      {
        ...devnet.bridge.config,
        port: 0,
        privateKey: devnet.accounts.users[0]!.privateKey,
        privateKeyFile: undefined,
        cors: [site.url],
      },
      { onTaskError: () => {} },
    );

    // The dev server and `vite build` bake VITE_* variables in: the page opens pre-filled with the URL.
    const before = process.env["VITE_CRYNUX_BRIDGE_URL"];
    process.env["VITE_CRYNUX_BRIDGE_URL"] = bridge.url;
    try {
      await build({
        root: CHAT_DIR,
        configFile: false,
        // Vite's caches go with the build, not into the repository.
        cacheDir: join(buildDir, ".vite"),
        logLevel: "warn",
        build: { outDir: join(buildDir, "dist"), emptyOutDir: true },
      });
    } finally {
      if (before === undefined) delete process.env["VITE_CRYNUX_BRIDGE_URL"];
      else process.env["VITE_CRYNUX_BRIDGE_URL"] = before;
    }

    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    page.on("pageerror", (error) => pageErrors.push(error));
    page.on("request", (request) => {
      if (request.method() === "POST" && request.url().endsWith("/v1/chat/completions")) {
        sent.push(request.postDataJSON() as SentChat);
        sentKeys.push(request.headers()["idempotency-key"] ?? "");
      }
    });
    await mkdir(RESULTS_DIR, { recursive: true });
  }, 600_000);

  afterAll(async () => {
    await browser?.close();
    await devServer?.close();
    await bridge?.stop();
    await devnet?.stop();
    if (site) await closeServer(site.server);
    if (buildDir) await rm(buildDir, { recursive: true, force: true });
  }, 120_000);

  /** Records every stage the progress display shows, however briefly (several may change in one task). */
  const watchStages = () =>
    page.evaluate(() => {
      const stage = document.getElementById("stage")!;
      const seen: string[] = [stage.dataset["stage"] ?? ""];
      (window as unknown as { seenStages: string[] }).seenStages = seen;
      new MutationObserver((records) => {
        // Each record holds the value before its change: the next record's old value is this change's new one.
        records.forEach((_, i) => {
          const value = i + 1 < records.length ? records[i + 1]!.oldValue : (stage.dataset["stage"] ?? "");
          if (value !== null && seen.at(-1) !== value) seen.push(value);
        });
      }).observe(stage, { attributes: true, attributeFilter: ["data-stage"], attributeOldValue: true });
    });
  const seenStages = () => page.evaluate(() => (window as unknown as { seenStages: string[] }).seenStages);

  const answered = () => page.locator("#messages li.assistant:not(.pending)");

  /** Sends a message and waits until the page shows its answer; returns the answer's text and task id. */
  async function chat(text: string, answers: number): Promise<{ text: string; taskId: bigint }> {
    await watchStages();
    await page.fill("#prompt", text);
    await page.click("#send");
    await page.waitForFunction(
      (count) =>
        document.querySelectorAll("#messages li.assistant:not(.pending)").length === count ||
        document.getElementById("stage")?.dataset["stage"] === "failed",
      answers,
      { timeout: 540_000, polling: 250 },
    );
    expect(await page.locator("#error").isHidden(), (await page.locator("#error").textContent()) ?? "").toBe(
      true,
    );
    const last = answered().last();
    const meta = (await last.locator(".meta").textContent()) ?? "";
    const taskId = /task #(\d+)/.exec(meta)?.[1];
    expect(taskId, meta).toBeDefined();
    return { text: (await last.locator(".text").textContent()) ?? "", taskId: BigInt(taskId!) };
  }

  /** The answer the network agreed on, as the bridge stored it after checking it against the chain. */
  async function networkAnswer(taskId: bigint): Promise<string> {
    const record = (await bridge.store.all()).find((r) => r.taskId === taskId);
    expect(record?.state).toBe("succeeded");
    const task = await bridge.client.getTask({ taskId });
    expect(task.creator).toBe(devnet.accounts.users[0]!.address);
    expect(["success", "uploaded"]).toContain(task.state);
    return (record!.result as GptResponse).choices[0]!.message.content as string;
  }

  test("the settings are entered, kept, and fill the model picker from /v1/models", async () => {
    await page.goto(site.url);
    expect(await page.inputValue("#bridge-url")).toBe(bridge.url);
    expect(await page.inputValue("#api-key")).toBe("");
    // The OpenAI base URL works as well as the bridge's.
    await page.fill("#bridge-url", `${bridge.url}/v1`);
    await page.fill("#api-key", devnet.apiKey);
    await page.click("#connect");
    await page.locator('#connection[data-state="connected"]').waitFor({ timeout: 60_000 });
    const options = await page
      .locator("#model option")
      .evaluateAll((all) => all.map((option) => (option as HTMLOptionElement).value));
    expect(options).toEqual([devnet.model.bridgeModel]);
    await page.selectOption("#model", devnet.model.bridgeModel);

    await page.reload();
    expect(await page.inputValue("#bridge-url")).toBe(`${bridge.url}/v1`);
    expect(await page.inputValue("#api-key")).toBe(devnet.apiKey);
    await page.locator('#connection[data-state="connected"]').waitFor({ timeout: 60_000 });
    expect(await page.inputValue("#model")).toBe(devnet.model.bridgeModel);
  });

  test("two messages: each is a paid task, the second carries the history, progress is shown", async () => {
    const first = await chat("Hello! Who are you?", 1);
    expect(first.text.trim()).not.toBe("");
    const firstStages = await seenStages();
    expect(firstStages[0]).toBe("idle");
    expect(firstStages).toEqual(expect.arrayContaining(["sending", "paid", "waiting", "received"]));
    expect(firstStages.indexOf("sending")).toBeLessThan(firstStages.indexOf("paid"));
    expect(firstStages.indexOf("waiting")).toBeLessThan(firstStages.indexOf("received"));
    const log = await page
      .locator("#progress li")
      .evaluateAll((items) =>
        items.map((item) => [(item as HTMLElement).dataset["stage"], item.textContent ?? ""]),
      );
    expect(log.map(([stage]) => stage)).toEqual(expect.arrayContaining(["sending", "paid", "received"]));
    expect(log.find(([stage]) => stage === "paid")?.[1]).toContain(`task #${first.taskId}`);
    const firstAnswer = await networkAnswer(first.taskId);
    expect(first.text).toBe(firstAnswer.trim() === "" ? "(empty answer)" : firstAnswer);

    const second = await chat("Tell me one more thing.", 2);
    expect(second.taskId).toBeGreaterThan(first.taskId);
    expect(await seenStages()).toEqual(expect.arrayContaining(["sending", "paid", "received"]));
    const secondAnswer = await networkAnswer(second.taskId);
    expect(second.text).toBe(secondAnswer.trim() === "" ? "(empty answer)" : secondAnswer);

    expect(sent).toHaveLength(2);
    expect(sent[0]).toEqual({
      model: devnet.model.bridgeModel,
      stream: true,
      messages: [{ role: "user", content: "Hello! Who are you?" }],
    });
    expect(sent[1]!.messages).toEqual([
      { role: "user", content: "Hello! Who are you?" },
      { role: "assistant", content: firstAnswer },
      { role: "user", content: "Tell me one more thing." },
    ]);
    expect(new Set(sentKeys).size).toBe(2);
    expect(await page.locator("#messages li").evaluateAll((items) => items.map((i) => i.className))).toEqual([
      "message user",
      "message assistant",
      "message user",
      "message assistant",
    ]);
    await page.screenshot({ path: join(RESULTS_DIR, "chat.png"), fullPage: true });
  });

  test("errors are shown plainly: a wrong API key, then a bridge that is down", async () => {
    const before = sent.length;
    await page.fill("#api-key", "sk-wrong-key-0123456789abcdef");
    await page.click("#connect");
    const error = page.locator("#error");
    await error.waitFor({ state: "visible", timeout: 60_000 });
    expect(await error.textContent()).toMatch(
      /^Incorrect API key provided: sk-w\*+ef\. \(HTTP 401, invalid_api_key\)$/,
    );

    // The model list stays; sending with the wrong key fails the same way, and the conversation is unchanged.
    await watchStages();
    await page.fill("#prompt", "This one is refused.");
    await page.click("#send");
    await page.locator('#stage[data-stage="failed"]').waitFor({ timeout: 60_000 });
    expect(await error.textContent()).toContain("Incorrect API key provided");
    expect(await page.locator('#progress li[data-stage="failed"]').textContent()).toContain("HTTP 401");
    expect(sent.length).toBe(before + 1);
    expect(await page.locator("#messages li").count()).toBe(4);
    expect(await page.inputValue("#prompt")).toBe("This one is refused.");
    await page.screenshot({ path: join(RESULTS_DIR, "chat-error.png"), fullPage: true });

    const down = await closedPortUrl();
    await page.fill("#bridge-url", down);
    await page.click("#connect");
    await page.locator('#connection[data-state="error"]').waitFor({ timeout: 60_000 });
    await page.waitForFunction(
      () => document.getElementById("error")?.textContent?.startsWith("Cannot reach the bridge"),
      undefined,
      { timeout: 60_000 },
    );
    expect(await error.textContent()).toContain(`Cannot reach the bridge at ${down}`);
    expect(pageErrors).toEqual([]);
  });

  test("the dev server: a bridge that does not allow its origin is refused by the browser, and reached through CRYNUX_BRIDGE_PROXY", async () => {
    const before = process.env["CRYNUX_BRIDGE_PROXY"];
    process.env["CRYNUX_BRIDGE_PROXY"] = devnet.bridge.url;
    try {
      devServer = await createViteServer({
        root: CHAT_DIR,
        configFile: join(CHAT_DIR, "vite.config.ts"),
        // Loaded through Vite's module runner: bundling it would leave a temporary file beside it.
        configLoader: "runner",
        cacheDir: join(buildDir, ".vite"),
        logLevel: "warn",
        server: { host: "127.0.0.1", port: 0 },
      });
      await devServer.listen();
    } finally {
      if (before === undefined) delete process.env["CRYNUX_BRIDGE_PROXY"];
      else process.env["CRYNUX_BRIDGE_PROXY"] = before;
    }
    const devUrl = `http://127.0.0.1:${(devServer.httpServer!.address() as AddressInfo).port}`;
    const devPage = await browser.newPage({ viewport: { width: 1280, height: 860 } });
    devPage.on("pageerror", (error) => pageErrors.push(error));
    try {
      await devPage.goto(devUrl);
      // The test's bridge allows only the built site's origin, not the dev server's: the browser hides its
      // answer from the page.
      await devPage.fill("#bridge-url", bridge.url);
      await devPage.fill("#api-key", devnet.apiKey);
      await devPage.click("#connect");
      await devPage.locator('#connection[data-state="error"]').waitFor({ timeout: 60_000 });
      expect(await devPage.locator("#error").textContent()).toContain(
        `Cannot reach the bridge at ${bridge.url}`,
      );

      await devPage.fill("#bridge-url", devUrl);
      await devPage.click("#connect");
      await devPage.locator('#connection[data-state="connected"]').waitFor({ timeout: 60_000 });
      expect(await devPage.inputValue("#model")).toBe(devnet.model.bridgeModel);
      await devPage.fill("#prompt", "Through the proxy.");
      await devPage.click("#send");
      await devPage.waitForFunction(
        () =>
          document.querySelector("#messages li.assistant:not(.pending)") !== null ||
          document.getElementById("stage")?.dataset["stage"] === "failed",
        undefined,
        { timeout: 540_000, polling: 250 },
      );
      expect(
        await devPage.locator("#error").isHidden(),
        (await devPage.locator("#error").textContent()) ?? "",
      ).toBe(true);
      const meta = (await devPage.locator("#messages li.assistant .meta").textContent()) ?? "";
      const taskId = BigInt(/task #(\d+)/.exec(meta)![1]!);
      const record = (await devnet.bridge.store.all()).find((r) => r.taskId === taskId);
      expect(record).toMatchObject({ state: "succeeded", model: devnet.model.bridgeModel });
      const content = (record!.result as GptResponse).choices[0]!.message.content as string;
      expect(await devPage.locator("#messages li.assistant .text").textContent()).toBe(
        content.trim() === "" ? "(empty answer)" : content,
      );
    } finally {
      await devPage.close();
    }
    expect(pageErrors).toEqual([]);
  });
});
