// Errors the SDK throws. Every API error carries the API's stable `code` and HTTP
// `status`; a revision conflict also carries `currentRevision`. Messages come from the
// server, which never puts a secret value in one.

/** An error answered by the Coffer API (`{"error": {"code", "message"}}`). */
export class CofferError extends Error {
  override readonly name: string = "CofferError";
  /**
   * The HTTP status; 0 when no HTTP status applies: the server could not be reached, or its
   * answers made no sense (a listing whose cursors go round in a cycle).
   */
  readonly status: number;
  /** The API's stable error code, e.g. `revision_conflict`, `secret_not_found`. */
  readonly code: string;
  /** For a revision conflict (409): the revision the resource is at now, when known. */
  readonly currentRevision: number | undefined;
  /**
   * The answer's `Retry-After`, in seconds, when it had one (503 `overloaded`: how long to
   * wait before trying again). `worker()` honours it.
   */
  readonly retryAfterSeconds: number | undefined;

  constructor(status: number, code: string, message: string, currentRevision?: number, retryAfterSeconds?: number) {
    super(message);
    this.status = status;
    this.code = code;
    this.currentRevision = currentRevision;
    this.retryAfterSeconds = retryAfterSeconds;
  }
}

/** `secrets.get(name)` for a name the function did not declare: a bug in the function. */
export class UndeclaredSecretError extends Error {
  override readonly name: string = "UndeclaredSecretError";
  readonly secret: string;
  constructor(secret: string, functionId: string) {
    super(`function ${functionId} did not declare the secret ${secret}: add it to its secrets`);
    this.secret = secret;
  }
}

/** `secrets.get(name)` for a declared secret that is not set in the environment. */
export class SecretNotSetError extends Error {
  override readonly name: string = "SecretNotSetError";
  readonly secret: string;
  constructor(secret: string, environment: string) {
    super(`the secret ${secret} is declared but not set in environment ${environment}`);
    this.secret = secret;
  }
}

/** A push delivery whose `Coffer-Signature` is missing, malformed, stale or wrong. */
export class SignatureError extends Error {
  override readonly name: string = "SignatureError";
}
