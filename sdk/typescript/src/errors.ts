// Errors the SDK throws. Every API error carries the API's stable `code` and HTTP
// `status`; a revision conflict also carries `currentRevision`. Messages come from the
// server, which never puts a secret value in one.

/** An error answered by the Coffer API (`{"error": {"code", "message"}}`). */
export class CofferError extends Error {
  override readonly name: string = "CofferError";
  /** The HTTP status (0 when the server could not be reached). */
  readonly status: number;
  /** The API's stable error code, e.g. `revision_conflict`, `secret_not_found`. */
  readonly code: string;
  /** For a revision conflict (409): the revision the resource is at now, when known. */
  readonly currentRevision: number | undefined;

  constructor(status: number, code: string, message: string, currentRevision?: number) {
    super(message);
    this.status = status;
    this.code = code;
    this.currentRevision = currentRevision;
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
