//! The "Examples:" section of each command's `--help`.

pub const ENV: &str = "Examples:
  coffer env list
  coffer env create production
  coffer env delete staging --yes";
pub const ENV_LIST: &str = "Examples:
  coffer env list
  coffer env list --json";
pub const ENV_CREATE: &str = "Examples:
  coffer env create production";
pub const ENV_DELETE: &str = "Examples:
  coffer env delete staging          # asks you to type 'staging'
  coffer env delete staging --yes    # in a script";

pub const SECRET: &str = "Examples:
  coffer secret set STRIPE_KEY --env production < stripe-key.txt
  coffer secret list --env production
  coffer secret show STRIPE_KEY --env production
  coffer secret delete STRIPE_KEY --env production --yes";
pub const SECRET_SET: &str = "Examples:
  coffer secret set STRIPE_KEY --env production < stripe-key.txt   # no shell history
  printf %s \"$TOKEN\" | coffer secret set API_TOKEN --env staging
  coffer secret set FEATURE_FLAG on --expected-revision 0           # only if new";
pub const SECRET_LIST: &str = "Examples:
  coffer secret list --env production
  coffer secret list --env production --search stripe        # names containing it, any case
  coffer secret list --env production --sort -updatedAt      # most recently changed first
  coffer secret list --env production --json";
pub const SECRET_SHOW: &str = "Examples:
  coffer secret show STRIPE_KEY --env production
  coffer secret show STRIPE_KEY --env production --json";
pub const SECRET_DELETE: &str = "Examples:
  coffer secret delete OLD_TOKEN --env staging                 # asks y/N
  coffer secret delete OLD_TOKEN --env staging --yes --expected-revision 3";
pub const SECRET_IMPORT: &str = "Examples:
  coffer secret import app.env --env staging     # app.env: your KEY=value file
  cat app.env | coffer secret import - --env staging";

pub const CONFIG: &str = "Examples:
  coffer config set feature_flags '{\"beta\": true}' --env production
  coffer config get feature_flags --env production
  coffer config list --env production
  coffer config delete feature_flags --env production --yes";
pub const CONFIG_SET: &str = "Examples:
  coffer config set region '\"eu-west-1\"' --env production      # a JSON string: quoted
  coffer config set limits '{\"rps\": 100}' --expected-revision 0  # only if new
  coffer config set flags --env staging < flags.json              # JSON from stdin";
pub const CONFIG_GET: &str = "Examples:
  coffer config get limits --env production          # the value, as JSON
  coffer config get limits --env production --json   # the whole entry, with its revision";
pub const CONFIG_LIST: &str = "Examples:
  coffer config list --env production
  coffer config list --env production --json";
pub const CONFIG_DELETE: &str = "Examples:
  coffer config delete old_flag --env staging                 # asks y/N
  coffer config delete old_flag --env staging --yes --expected-revision 3";

pub const APIKEY: &str = "Examples:
  coffer apikey create ci-deploy --role manage --env production
  coffer apikey list
  coffer apikey revoke ak_0123456789abcdef --yes";
pub const APIKEY_CREATE: &str = "Examples:
  coffer apikey create ci-deploy --role manage --env production
  KEY=$(coffer apikey create worker --role runtime --env production)   # the key alone
  coffer apikey create ops --role admin                                 # no --env";
pub const APIKEY_LIST: &str = "Examples:
  coffer apikey list
  coffer apikey list --json";
pub const APIKEY_REVOKE: &str = "Examples:
  coffer apikey revoke ak_0123456789abcdef          # asks y/N
  coffer apikey revoke ak_0123456789abcdef --yes";

pub const KEYS: &str = "Examples:
  coffer keys status
  coffer keys rewrap";
pub const KEYS_STATUS: &str = "Examples:
  coffer keys status
  coffer keys status --json";
pub const KEYS_REWRAP: &str = "Examples:
  coffer keys rewrap
  coffer keys rewrap --batch 100 --json";
pub const KEYS_VERIFY: &str = "Examples:
  coffer keys verify                             # exit code 6 when a value does not open
  coffer keys verify --json | jq '.unreadable[]'";

pub const MCP: &str = "Examples:
  COFFER_ADDR=https://coffer.example COFFER_API_KEY=ck_prod_… coffer mcp
  # an MCP client's configuration (docs/MCP.md):
  # {\"mcpServers\": {\"coffer\": {\"command\": \"coffer\", \"args\": [\"mcp\"],
  #   \"env\": {\"COFFER_ADDR\": \"https://coffer.example\", \"COFFER_API_KEY\": \"ck_prod_…\"}}}}";

pub const LOGIN: &str = "Examples:
  coffer login                                   # type the key; it is not echoed
  coffer login --addr https://coffer.example < key-file";
pub const LOGOUT: &str = "Examples:
  coffer logout
  coffer logout --addr https://coffer.example";

pub const EVENTS: &str = "Examples:
  coffer event send order.created --data '{\"orderId\": 42}' --env production
  coffer events tail
  coffer events tail --subject 'system.secret.>' --env production
  coffer events tail --json | jq .subject";
pub const EVENTS_SEND: &str = "Examples:
  coffer event send order.created --env production                  # prints the runs it started
  coffer event send order.created --data '{\"orderId\": 42}' --idempotency-key order-42
  coffer event send nightly.report --json | jq -r '.runs[].id'";
pub const EVENTS_TAIL: &str = "Examples:
  coffer events tail                                   # every event this key may see
  coffer events tail --subject 'system.secret.*.updated'
  coffer events tail --env production --json           # one JSON event per line";

pub const FUNCTION: &str = "Examples:
  coffer function register send-invoice --mode push --url https://fn.example/invoice \\
      --trigger order.created --secret STRIPE_KEY --env production
  coffer function register worker --file worker.yaml --env production
  coffer function list --env production
  coffer function delete send-invoice --env production --yes";
pub const FUNCTION_REGISTER: &str = "Examples:
  coffer function register send-invoice --mode push --url https://fn.example/invoice \\
      --trigger order.created --secret STRIPE_KEY --config region --env production
  coffer function register reports --mode pull --trigger 'report.*' --secret DB_URL
  SIGNING=$(coffer function register hook --file hook.yaml)   # the signing secret alone
  coffer function register reports --file reports.json --expected-revision 2   # an update";
pub const FUNCTION_LIST: &str = "Examples:
  coffer function list --env production
  coffer function list --env production --json";
pub const FUNCTION_SHOW: &str = "Examples:
  coffer function show send-invoice --env production
  coffer function show send-invoice --env production --json";
pub const FUNCTION_DELETE: &str = "Examples:
  coffer function delete send-invoice --env staging          # asks y/N
  coffer function delete send-invoice --env staging --yes --expected-revision 3";
pub const FUNCTION_ROTATE_SECRET: &str = "Examples:
  coffer function rotate-secret send-invoice --env production               # old one signs a day more
  coffer function rotate-secret send-invoice --grace-ms 0 --env production  # drop the old one now";

pub const RUNS: &str = "Examples:
  coffer runs list --env production
  coffer runs list --function send-invoice --status failed --limit 20
  coffer runs show run_019ad0c1e2f30123456789abcdef --env production";
pub const RUNS_LIST: &str = "Examples:
  coffer runs list --env production                      # every run, newest first
  coffer runs list --function send-invoice --status failed --limit 20
  coffer runs list --status queued --json | jq length";
pub const RUNS_SHOW: &str = "Examples:
  coffer runs show run_019ad0c1e2f30123456789abcdef --env production
  coffer runs show run_019ad0c1e2f30123456789abcdef --json | jq .output";

pub const RUN: &str = "Examples:
  coffer run --function api -- ./server --port 8080    # COFFER_API_KEY: a runtime key
  coffer run --env production --function api --only DB_URL -- python manage.py migrate
  coffer run --function api --watch -- node server.js    # restarted when a value changes

Exit code: CMD's (128+N when signal N ended it); before CMD starts, coffer's own:
4 without a runtime key of the environment, 3 for an unknown function, 127 when CMD
is not found.";

pub const ORCHESTRATION: &str = "Examples:
  coffer orchestration create -f billing.yaml --env production
  coffer orchestration get orch_0190a1b2c3d4e5f6a7b8c9d0 --env production
  coffer orchestration run orch_0190a1b2c3d4e5f6a7b8c9d0 --param amount=42 --wait
  coffer orchestration approve orun_0190a1b2c3d4e5f6a7b8c9d0 --reason 'checked by ops'";
pub const ORCHESTRATION_CREATE: &str = "Examples:
  coffer orchestration create -f billing.yaml --env production
  coffer orchestration create -f - --json < billing.json | jq -r .id

A definition file (YAML or JSON):
  name: nightly-billing
  steps:
    - id: charge
      type: compute
      functionId: billing
      params: {currency: EUR}
      encryptedParams:
        API_TOKEN: {value: tok-123, encrypt: true}      # sealed; every read shows ********
        STRIPE: {secretRef: STRIPE_KEY}                 # the environment's secret, read when the step runs
    - {id: review, type: approval, timeoutMs: 86400000}
    - {id: cool-down, type: delay, durationMs: 60000}";
pub const ORCHESTRATION_UPDATE: &str = "Examples:
  coffer orchestration get orch_0190a1b2c3d4e5f6a7b8c9d0 --json > billing.json
  $EDITOR billing.json            # encrypted params read {\"value\": \"********\", \"encrypted\": true}
  coffer orchestration update orch_0190a1b2c3d4e5f6a7b8c9d0 -f billing.json

The file holds the whole definition. Per encrypted param: sent back masked, the stored
value is kept; {\"value\": ..., \"encrypt\": true} seals a new one; left out, it is removed.
A file saved from `get --json` carries its revision: the update is refused (exit code 5)
if the orchestration changed since.";
pub const ORCHESTRATION_GET: &str = "Examples:
  coffer orchestration get orch_0190a1b2c3d4e5f6a7b8c9d0 --env production
  coffer orchestration get orch_0190a1b2c3d4e5f6a7b8c9d0 --json > billing.json";
pub const ORCHESTRATION_LIST: &str = "Examples:
  coffer orchestration list --env production
  coffer orchestration list --json | jq -r '.[].id'";
pub const ORCHESTRATION_DELETE: &str = "Examples:
  coffer orchestration delete orch_0190a1b2c3d4e5f6a7b8c9d0              # asks y/N
  coffer orchestration delete orch_0190a1b2c3d4e5f6a7b8c9d0 --yes --expected-revision 3";
pub const ORCHESTRATION_RUN: &str = "Examples:
  coffer orchestration run orch_0190a1b2c3d4e5f6a7b8c9d0 --param amount=42 --param note=monthly
  coffer orchestration run orch_0190a1b2c3d4e5f6a7b8c9d0 --params '{\"amount\": 42}' --json
  coffer orchestration run orch_0190a1b2c3d4e5f6a7b8c9d0 --wait --timeout 600

Exit code with --wait: 0 when the run succeeded or waits for an approval, 1 when it
failed, was rejected, or was still running at the timeout.";
pub const ORCHESTRATION_RUNS: &str = "Examples:
  coffer orchestration runs list --orchestration orch_0190a1b2c3d4e5f6a7b8c9d0
  coffer orchestration runs show orun_0190a1b2c3d4e5f6a7b8c9d0";
pub const ORCHESTRATION_RUNS_LIST: &str = "Examples:
  coffer orchestration runs list --env production                     # newest first
  coffer orchestration runs list --status waiting_approval --limit 20
  coffer orchestration runs list --orchestration orch_0190a1b2c3d4e5f6a7b8c9d0 --json";
pub const ORCHESTRATION_RUNS_SHOW: &str = "Examples:
  coffer orchestration runs show orun_0190a1b2c3d4e5f6a7b8c9d0 --env production
  coffer orchestration runs show orun_0190a1b2c3d4e5f6a7b8c9d0 --json | jq .status";
pub const ORCHESTRATION_APPROVE: &str = "Examples:
  coffer orchestration approve orun_0190a1b2c3d4e5f6a7b8c9d0
  coffer orchestration approve orun_0190a1b2c3d4e5f6a7b8c9d0 --reason 'amount checked'

Exit code 5 when the run is not waiting for an approval (code not_waiting).";
pub const ORCHESTRATION_REJECT: &str = "Examples:
  coffer orchestration reject orun_0190a1b2c3d4e5f6a7b8c9d0 --reason 'wrong amount'

Exit code 5 when the run is not waiting for an approval (code not_waiting).";
