import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { formatCnx, parseCnx } from "@crynux/pricing";
import { type Address, getAddress, type Hex, isAddress } from "viem";
import { z } from "zod";

export type FaucetServer = { url: string; port: number; stop(): Promise<void> };

export type StartFaucetServerOptions = {
  /** Sends the CNX; resolves with the transaction hash once mined. */
  send: (address: Address, amount: bigint) => Promise<Hex>;
  host?: string | undefined;
  /** Default 0: a free port. */
  port?: number | undefined;
  /** Largest amount per request, in wei; default 1000 CNX. */
  maxAmount?: bigint | undefined;
};

const requestSchema = z.strictObject({
  address: z.string().refine((value) => isAddress(value, { strict: false }), "must be a 0x address"),
  /** CNX as a decimal string ("10", "0.5"). */
  amount: z.string().regex(/^\d+(\.\d{1,18})?$/, "must be a CNX amount such as 10 or 0.5"),
});

const MAX_BODY_BYTES = 4096;

/**
 * A tiny HTTP faucet for the devnet: `POST /faucet {"address":"0x…","amount":"10"}` sends that many CNX from
 * the deployer and answers `{ txHash, address, amount }` once mined. Loopback only by default.
 */
export async function startFaucetServer(options: StartFaucetServerOptions): Promise<FaucetServer> {
  const maxAmount = options.maxAmount ?? parseCnx("1000");
  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      reply(response, 500, { error: { message: error instanceof Error ? error.message : String(error) } });
    });
  });
  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const path = new URL(request.url ?? "/", "http://faucet").pathname;
    if (path !== "/faucet") return reply(response, 404, { error: { message: "POST /faucet" } });
    if (request.method !== "POST") return reply(response, 405, { error: { message: "POST /faucet" } });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of request as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) return reply(response, 413, { error: { message: "body too large" } });
      chunks.push(chunk);
    }
    let body: unknown;
    try {
      body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch {
      return reply(response, 400, { error: { message: 'expected JSON {"address":"0x…","amount":"10"}' } });
    }
    const parsed = requestSchema.safeParse(body);
    if (!parsed.success)
      return reply(response, 400, {
        error: { message: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ") },
      });
    const amount = parseCnx(parsed.data.amount);
    if (amount <= 0n || amount > maxAmount)
      return reply(response, 400, {
        error: { message: `amount must be more than 0 and at most ${formatCnx(maxAmount)} CNX` },
      });
    const address = getAddress(parsed.data.address);
    const txHash = await options.send(address, amount);
    reply(response, 200, { txHash, address, amount: formatCnx(amount) });
  };
  const host = options.host ?? "127.0.0.1";
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 0, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host}:${port}`,
    port,
    stop: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function reply(response: ServerResponse, status: number, body: unknown) {
  response.writeHead(status, { "content-type": "application/json" }).end(`${JSON.stringify(body)}\n`);
}
