import {
  type BridgeSettings,
  type BridgeTaskStatus,
  type ChatMessage,
  CONNECTION_BROKEN,
  getTaskStatus,
  listChatModels,
  normalizeBridgeUrl,
  streamChat,
} from "./bridge.js";
import { createProgress } from "./progress.js";
import { loadSettings, saveSettings } from "./settings.js";

const element = <T extends HTMLElement>(id: string): T => {
  const found = document.getElementById(id);
  if (!found) throw new Error(`The page has no #${id}.`);
  return found as T;
};

const settingsForm = element<HTMLFormElement>("settings");
const urlInput = element<HTMLInputElement>("bridge-url");
const keyInput = element<HTMLInputElement>("api-key");
const modelSelect = element<HTMLSelectElement>("model");
const connection = element<HTMLParagraphElement>("connection");
const messageList = element<HTMLOListElement>("messages");
const errorBox = element<HTMLDivElement>("error");
const composer = element<HTMLFormElement>("composer");
const prompt = element<HTMLTextAreaElement>("prompt");
const sendButton = element<HTMLButtonElement>("send");
const newChatButton = element<HTMLButtonElement>("new-chat");
const progress = createProgress(element("stage"), element("progress"));

const saved = loadSettings();
urlInput.value = saved.url;
keyInput.value = saved.apiKey;
let settings: BridgeSettings = { url: saved.url, apiKey: saved.apiKey };

/** The conversation as the model sees it: every answered turn, sent whole with each new message. */
let history: ChatMessage[] = [];
let busy = false;
/** A request whose stream broke after payment: sent again unchanged, it reuses its key (no second payment). */
let retry: { body: string; requestId: string } | undefined;

function showError(message: string): void {
  errorBox.textContent = message;
  errorBox.hidden = false;
}

function hideError(): void {
  errorBox.hidden = true;
  errorBox.textContent = "";
}

const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));

function setBusy(value: boolean): void {
  busy = value;
  sendButton.disabled = value;
  newChatButton.disabled = value;
  sendButton.textContent = value ? "Waiting…" : "Send";
}

function addMessage(role: ChatMessage["role"], text: string): { item: HTMLLIElement; meta: HTMLElement } {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset["role"] = role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Crynux";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  const meta = document.createElement("span");
  meta.className = "meta";
  item.append(who, body, meta);
  messageList.append(item);
  item.scrollIntoView({ block: "end" });
  return { item, meta };
}

async function connect(): Promise<void> {
  hideError();
  connection.textContent = `Connecting to ${normalizeBridgeUrl(settings.url)}…`;
  try {
    const models = await listChatModels(settings);
    const wanted = modelSelect.value || loadSettings().model;
    modelSelect.replaceChildren(
      ...models.map((model) => {
        const option = document.createElement("option");
        option.value = model.id;
        option.textContent = model.description ? `${model.id} — ${model.description}` : model.id;
        return option;
      }),
    );
    if (models.some((model) => model.id === wanted)) modelSelect.value = wanted;
    modelSelect.disabled = models.length === 0;
    connection.textContent =
      models.length === 0
        ? `Connected to ${normalizeBridgeUrl(settings.url)}, but it offers no chat model.`
        : `Connected to ${normalizeBridgeUrl(settings.url)}: ${models.length} chat model${models.length === 1 ? "" : "s"}.`;
    connection.dataset["state"] = "connected";
    if (models.length > 0) saveSettings({ model: modelSelect.value });
  } catch (error) {
    // The previous model list stays: a wrong key or an unreachable bridge says nothing about the models.
    connection.textContent = "Not connected.";
    connection.dataset["state"] = "error";
    showError(messageOf(error));
  }
}

/** A fresh `Idempotency-Key`; getRandomValues also works on plain-http origins, unlike randomUUID. */
function newRequestId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return `chat-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")}`;
}

/**
 * Follows the bridge's record of the request until it is paid (the fee and transaction are then known), or until
 * `signal` aborts. The stream tells the rest, so polling stops there: every poll counts against the key's rate
 * limit.
 */
async function followStatus(requestId: string, signal: AbortSignal): Promise<void> {
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => {
        clearTimeout(timer);
        resolve();
      });
    });
  let reportedFailure = false;
  while (!signal.aborted) {
    let status: BridgeTaskStatus | null = null;
    try {
      status = await getTaskStatus(settings, requestId, signal);
    } catch (error) {
      if (signal.aborted) return;
      if (!reportedFailure) progress.note(`The task status is not available: ${messageOf(error)}`);
      reportedFailure = true;
    }
    if (status && !signal.aborted) {
      progress.bridgeStatus(status);
      if (status.status !== "recorded") return;
    }
    await sleep(1000);
  }
}

async function send(text: string): Promise<void> {
  const model = modelSelect.value;
  if (!model) {
    showError("Pick a model first: save the bridge settings to load the bridge's models.");
    return;
  }
  hideError();
  const userMessage: ChatMessage = { role: "user", content: text };
  const messages = [...history, userMessage];
  const body = JSON.stringify({ url: normalizeBridgeUrl(settings.url), model, messages });
  const requestId = retry?.body === body ? retry.requestId : newRequestId();
  retry = undefined;

  setBusy(true);
  prompt.value = "";
  const sent = addMessage("user", text);
  const answer = addMessage("assistant", "");
  answer.item.classList.add("pending");
  answer.meta.textContent = "waiting for the network…";
  progress.start(requestId);
  const following = new AbortController();
  const followed = followStatus(requestId, following.signal);
  try {
    const result = await streamChat(settings, {
      model,
      messages,
      requestId,
      onPaid: (task) => progress.paid(task),
      onKeepAlive: () => progress.keepAlive(),
      onDelta: (delta) => {
        const textBox = answer.item.querySelector(".text")!;
        textBox.textContent = `${textBox.textContent ?? ""}${delta}`;
      },
    });
    history = [...messages, { role: "assistant", content: result.content }];
    answer.item.classList.remove("pending");
    if (result.content.trim() === "") answer.item.querySelector(".text")!.textContent = "(empty answer)";
    const seconds = progress.received(result.taskId);
    answer.meta.textContent = [
      result.taskId ? `task #${result.taskId}` : undefined,
      `${seconds.toFixed(1)} s`,
      result.finishReason === "length" ? "cut at the token limit" : undefined,
    ]
      .filter(Boolean)
      .join(" · ");
  } catch (error) {
    // The failed turn leaves the conversation; its text goes back to the prompt to be sent again.
    sent.item.remove();
    answer.item.remove();
    if (prompt.value === "") prompt.value = text;
    if (error instanceof Error && "code" in error && error.code === CONNECTION_BROKEN)
      retry = { body, requestId };
    const message = messageOf(error);
    progress.failed(message);
    showError(message);
  } finally {
    following.abort();
    await followed;
    setBusy(false);
  }
}

settingsForm.addEventListener("submit", (event) => {
  event.preventDefault();
  settings = { url: urlInput.value.trim(), apiKey: keyInput.value.trim() };
  saveSettings(settings);
  void connect();
});

modelSelect.addEventListener("change", () => saveSettings({ model: modelSelect.value }));

composer.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = prompt.value.trim();
  if (text === "" || busy) return;
  void send(text);
});

prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    composer.requestSubmit();
  }
});

newChatButton.addEventListener("click", () => {
  history = [];
  retry = undefined;
  messageList.replaceChildren();
  hideError();
  progress.reset();
  prompt.focus();
});

if (settings.url && settings.apiKey) void connect();
