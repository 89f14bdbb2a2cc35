// @coffer/sdk: the management client, functions (push and pull), orchestrations.

export { Coffer } from "./client.js";
export { Http, type Answer, type CofferOptions, type Query, type RequestOptions } from "./http.js";
export { CofferError, SecretNotSetError, SignatureError, UndeclaredSecretError } from "./errors.js";
export {
  createFunction,
  contextFor,
  Secrets,
  Config,
  UndeclaredConfigError,
  ConfigNotSetError,
  PermanentError,
  type Json,
  type FunctionMode,
  type TriggerSpec,
  type FunctionDefinition,
  type FunctionContext,
  type RunEvent,
  type RunInfo,
  type Handler,
  type CofferFunction,
  type Job,
} from "./functions.js";
export {
  sign,
  verifySignature,
  parseSignatureHeader,
  SIGNATURE_HEADER,
  DEFAULT_TOLERANCE_SECONDS,
  type ParsedSignature,
  type VerifyOptions,
} from "./signature.js";
export { serve, DEFAULT_MAX_BODY_BYTES, type ServeOptions, type SigningSecrets, type FetchHandler } from "./serve.js";
export { toNodeListener, type NodeRequestLike, type NodeResponseLike } from "./node.js";
export { register, RegisterError, type RegisterOptions, type Registration } from "./register.js";
export { worker, LeaseLostError, MIN_POLL_INTERVAL_MS, type WorkerOptions, type Worker } from "./worker.js";
export type {
  ApiKeysApi,
  AuditApi,
  AuditListOptions,
  CallOptions,
  ConfigApi,
  CreateApiKeyInput,
  CreatedApiKey,
  EnvironmentsApi,
  EventsApi,
  FunctionsApi,
  KeysApi,
  OrchestrationDefinition,
  OrchestrationRunListOptions,
  OrchestrationRunWaitOptions,
  OrchestrationRunsApi,
  OrchestrationsApi,
  PageOptions,
  PutFunctionDefinition,
  RevisionOptions,
  RunListOptions,
  RunsApi,
  SecretListOptions,
  SecretSort,
  SecretsApi,
  WaitOptions,
} from "./client.js";
export { Pager, type Page, type PageFetcher } from "./pager.js";
export {
  MASK,
  encrypt,
  isMasked,
  keep,
  plain,
  secretRef,
  type EncryptParam,
  type MaskedParam,
  type PlainParam,
  type SecretRefParam,
} from "./params.js";
// Every schema of the server's OpenAPI document, as `schemas.SecretMeta`, …
export type * as schemas from "./openapi.gen.js";
export type {
  ApiKey,
  ApprovalStep,
  AuditEntry,
  AuditVerification,
  Caller,
  ComputeStep,
  Condition,
  ConfigEntry,
  DecisionStep,
  DelayStep,
  Environment,
  EventAccepted,
  Function as FunctionInfo,
  ImportedSecret,
  KeyStatus,
  Orchestration,
  OrchestrationRun,
  OrchestrationRunStatus,
  Param,
  RewrapReport,
  RoleName,
  Run,
  RunRef,
  RunStatus,
  SecretMeta,
  Status as ServerStatus,
  Step,
  StepState,
  StepStatus,
  VerifyReport,
} from "./openapi.gen.js";
