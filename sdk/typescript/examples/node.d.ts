// The little of Node.js the examples use, declared here because the SDK does not depend on
// @types/node (with it installed, delete this file).

declare module "node:http" {
  import type { NodeRequestLike, NodeResponseLike } from "@coffer/sdk";
  export interface Server {
    listen(port: number, host: string, callback: () => void): this;
    address(): { port: number; address: string } | string | null;
    close(callback?: (error?: Error) => void): this;
    closeAllConnections(): void;
    once(event: "error", listener: (error: Error) => void): this;
  }
  export function createServer(listener: (req: NodeRequestLike, res: NodeResponseLike) => void): Server;
}

declare const process: {
  argv: string[];
  env: Record<string, string | undefined>;
  exitCode: number | undefined;
  once(signal: "SIGINT" | "SIGTERM", listener: () => void): void;
};
