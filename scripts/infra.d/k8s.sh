# A Kubernetes control plane on loopback, sourced by scripts/infra: etcd, kube-apiserver,
# kube-controller-manager and kube-scheduler built from their Go modules, kwok standing in for the
# nodes' kubelets (a pod bound to one of its fake nodes turns Running without a container), and
# KEDA's operator and metrics API server. No Docker, no kubelet, no network beyond 127.0.0.1.
#
# Each part is a process of its own named k8s-<part> (pid file, log); `up k8s` starts the ones not
# running, in order, each waited for. Certificates, keys and the admin kubeconfig are generated once
# into $STATE/k8s (the kubeconfig: $STATE/k8s/kubeconfig).

K8S_VERSION=v1.37.2 # k8s.io/kubernetes; scripts/infra.d/kubernetes/go.mod names it too
ETCD_VERSION=v3.7.3 # go.etcd.io/etcd/server/v3; scripts/infra.d/etcd/go.mod names it too
KWOK_VERSION=v0.8.0
KEDA_VERSION=v2.21.0 # the release whose API types deploy/validate checks the chart against
K8S_BIN="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-keda-$KEDA_VERSION"
K8S_ETCD_PORT=${K8S_ETCD_PORT:-12379} # its peer port is the next one
K8S_API_PORT=${K8S_API_PORT:-16443}
K8S_CONTROLLER_MANAGER_PORT=${K8S_CONTROLLER_MANAGER_PORT:-16457}
K8S_SCHEDULER_PORT=${K8S_SCHEDULER_PORT:-16459}
K8S_KWOK_PORT=${K8S_KWOK_PORT:-16460}
K8S_KEDA_PORT=${K8S_KEDA_PORT:-16466}         # the operator's gRPC metrics service; +1 its probes, +2 its Prometheus metrics
K8S_KEDA_ADAPTER_PORT=${K8S_KEDA_ADAPTER_PORT:-16470} # the external metrics API; +1 its own metrics
K8S_GPU_NODES=${K8S_GPU_NODES:-2} # fake GPU nodes (8 GPUs each) beside one CPU node, all run by kwok
K8S_PARTS=(etcd apiserver controller-manager scheduler kwok keda-operator keda-adapter)

k8s_dir() { echo "$STATE/k8s"; }
k8s_kubeconfig() { echo "$STATE/k8s/kubeconfig"; }

# ---------------------------------------------------------------- install
k8s_go() { # k8s_go ARGS...: go, at the lowest priority while a CI run shares the two cores
  if pgrep -f fresh-clone-ci >/dev/null 2>&1; then nice -n 19 go "$@"; else go "$@"; fi
}

module_dir() { # module_dir MODULE@VERSION: its folder in the module cache, downloaded if needed
  go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'
}

install_k8s() {
  [[ -f "$K8S_BIN/.complete" ]] && return
  need go "Install Go 1.26 or newer: https://go.dev/doc/install"
  say "infra: building the Kubernetes control plane ($K8S_VERSION), etcd $ETCD_VERSION, kwok $KWOK_VERSION and KEDA $KEDA_VERSION from their Go modules (long the first time)"
  local out="$K8S_BIN.tmp" dir
  rm -rf "$out"
  mkdir -p "$out"
  # kubernetes and etcd: from modules of ours that mirror their replace directives.
  # The version the servers report (Helm checks the chart's kubeVersion against it), as Kubernetes' own build stamps it.
  local v=k8s.io/component-base/version minor=${K8S_VERSION#v1.}
  minor=${minor%%.*}
  local stamp="-X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X $v.buildDate=1970-01-01T00:00:00Z"
  (cd "$HERE/kubernetes" && timed "build kube-apiserver, kube-controller-manager, kube-scheduler" k8s_go build -trimpath -ldflags "$stamp" -o "$out/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler) \
    || die "building the Kubernetes commands failed (see the output above)"
  (cd "$HERE/etcd" && timed "build etcd" k8s_go build -trimpath -o "$out/etcd" go.etcd.io/etcd/server/v3) \
    || die "building etcd failed (see the output above)"
  GOBIN="$out" timed "build kwok" k8s_go install -trimpath "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" \
    || die "building kwok failed (is the Go module proxy reachable? see the output above)"
  # kwok's stages (what happens to a node and a pod, and when) ship as YAML in its module.
  dir=$(module_dir "sigs.k8s.io/kwok@$KWOK_VERSION")
  local stage
  for stage in node/fast/node-initialize node/heartbeat-with-lease/node-heartbeat-with-lease pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
    printf -- '---\n'; cat "$dir/kustomize/stage/$stage.yaml"
  done >"$out/kwok-stages.yaml" || die "kwok's stages are missing from its module in $dir"
  # KEDA's go.mod replaces a module by another version, so `go install` refuses: build in its folder.
  dir=$(module_dir "github.com/kedacore/keda/v2@$KEDA_VERSION")
  [[ -d "$dir" ]] || die "go mod download of github.com/kedacore/keda/v2@$KEDA_VERSION failed (is the Go module proxy reachable?)"
  (cd "$dir" && timed "build the KEDA operator and metrics API server" \
    k8s_go build -trimpath -o "$out/keda-operator" ./cmd/operator && k8s_go build -trimpath -o "$out/keda-adapter" ./cmd/adapter) \
    || die "building KEDA failed (see the output above)"
  mkdir "$out/keda-crds" && cp "$dir"/config/crd/bases/*.yaml "$out/keda-crds/" && chmod u+w "$out"/keda-crds/*.yaml
  touch "$out/.complete"
  rm -rf "$K8S_BIN"
  mv "$out" "$K8S_BIN"
}

# ---------------------------------------------------------------- certificates
k8s_cert() { # k8s_cert DIR NAME SUBJECT [SANS] [CA]: a key and a certificate signed by CA (default: ca)
  local dir=$1 name=$2 subject=$3 sans=${4:-} ca=${5:-ca}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$dir/$name.key" -subj "$subject" -out "$dir/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [[ -n $sans ]] && echo "subjectAltName=$sans"
  } >"$dir/$name.ext"
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/$ca.crt" -CAkey "$dir/$ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/$name.ext" -out "$dir/$name.crt" 2>/dev/null
  rm -f "$dir/$name.csr" "$dir/$name.ext"
}

k8s_pki() { # once: the cluster CA, the API server's and the admin's certificates, the front proxy, service-account keys
  local dir
  dir="$(k8s_dir)/pki"
  [[ -f "$dir/.complete" ]] && return
  need openssl "Install OpenSSL: apt-get install openssl"
  rm -rf "$dir"
  mkdir -p "$dir"
  local ca
  for ca in ca front-proxy-ca; do
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$dir/$ca.key" -out "$dir/$ca.crt" -days 3650 -subj "/CN=img2img-$ca" 2>/dev/null \
      || die "openssl could not make the $ca certificate"
  done
  k8s_cert "$dir" apiserver /CN=kube-apiserver "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
  k8s_cert "$dir" admin "/O=system:masters/CN=img2img-admin"
  k8s_cert "$dir" front-proxy-client /CN=front-proxy-client "" front-proxy-ca
  # KEDA's operator and metrics API server authenticate each other with one certificate (mTLS) and
  # read it as ca.crt, tls.crt and tls.key from one folder.
  k8s_cert "$dir" keda /CN=keda "IP:127.0.0.1,DNS:localhost"
  mkdir -p "$dir/keda-certs"
  cp "$dir/ca.crt" "$dir/keda-certs/ca.crt"; cp "$dir/keda.crt" "$dir/keda-certs/tls.crt"; cp "$dir/keda.key" "$dir/keda-certs/tls.key"
  openssl genrsa -out "$dir/sa.key" 2048 2>/dev/null && openssl rsa -in "$dir/sa.key" -pubout -out "$dir/sa.pub" 2>/dev/null \
    || die "openssl could not make the service-account key"
  touch "$dir/.complete"
  local pki=$dir
  cat >"$(k8s_kubeconfig)" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: img2img
    cluster:
      server: https://127.0.0.1:$K8S_API_PORT
      certificate-authority: $pki/ca.crt
users:
  - name: admin
    user:
      client-certificate: $pki/admin.crt
      client-key: $pki/admin.key
contexts:
  - name: img2img
    context: { cluster: img2img, user: admin }
current-context: img2img
EOF
}

# ---------------------------------------------------------------- processes
k8s_api() { # k8s_api METHOD PATH [BODY]: the API server as its admin; fails on an HTTP error
  # The body goes through stdin: a CRD is larger than one command-line argument may be.
  local pki
  pki="$(k8s_dir)/pki"
  curl --fail-with-body -sS --max-time 10 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
    -X "$1" -H 'Content-Type: application/yaml' ${3:+--data-binary @-} "https://127.0.0.1:$K8S_API_PORT$2" <<<"${3:-}"
}

k8s_apply() { # k8s_apply COLLECTION-PATH NAME YAML: create unless it exists; the API server's refusal on stderr
  local answer
  k8s_api GET "$1/$2" >/dev/null 2>&1 && return
  answer=$(k8s_api POST "$1" "$3") || { say "infra: POST $1: $(sed -n 's/^  "message": "\(.*\)",$/\1/p' <<<"$answer")"; return 1; }
}

healthz() { curl -fsSk -o /dev/null --max-time 2 "https://127.0.0.1:$1/healthz"; } # healthz PORT

k8s_node_answers() { # k8s_node_answers NODE
  case ${1#k8s-} in
    etcd) curl -fsS --max-time 2 "http://127.0.0.1:$K8S_ETCD_PORT/health" | grep -q '"health":"true"' ;;
    apiserver) k8s_api GET /readyz >/dev/null ;;
    controller-manager) healthz "$K8S_CONTROLLER_MANAGER_PORT" ;;
    scheduler) healthz "$K8S_SCHEDULER_PORT" ;;
    kwok) curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$K8S_KWOK_PORT/healthz" ;;
    keda-operator) curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$((K8S_KEDA_PORT + 1))/readyz" ;;
    # Answers through the API server's aggregation layer, as the HPA controller asks it.
    keda-adapter) k8s_api GET /apis/external.metrics.k8s.io/v1beta1 >/dev/null ;;
  esac
}

k8s_where() { # k8s_where NODE
  case ${1#k8s-} in
    etcd) echo "http://127.0.0.1:$K8S_ETCD_PORT" ;;
    apiserver) echo "https://127.0.0.1:$K8S_API_PORT (kubeconfig $(k8s_kubeconfig))" ;;
    controller-manager) echo "https://127.0.0.1:$K8S_CONTROLLER_MANAGER_PORT" ;;
    scheduler) echo "https://127.0.0.1:$K8S_SCHEDULER_PORT" ;;
    kwok) echo "http://127.0.0.1:$K8S_KWOK_PORT ($K8S_GPU_NODES fake GPU nodes and a CPU node)" ;;
    keda-operator) echo "127.0.0.1:$K8S_KEDA_PORT (gRPC metrics service)" ;;
    keda-adapter) echo "https://127.0.0.1:$K8S_KEDA_ADAPTER_PORT (external.metrics.k8s.io)" ;;
  esac
}

k8s_start_etcd() {
  ensure_port_free "$K8S_ETCD_PORT" etcd K8S_ETCD_PORT
  ensure_port_free "$((K8S_ETCD_PORT + 1))" "etcd's peers" K8S_ETCD_PORT
  spawn k8s-etcd "$K8S_BIN/etcd" --name k8s --data-dir "$(k8s_dir)/etcd" \
    --listen-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$K8S_ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((K8S_ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((K8S_ETCD_PORT + 1))" \
    --initial-cluster "k8s=http://127.0.0.1:$((K8S_ETCD_PORT + 1))" --quota-backend-bytes $((1 << 30))
}

k8s_start_apiserver() {
  local pki
  pki="$(k8s_dir)/pki"
  ensure_port_free "$K8S_API_PORT" kube-apiserver K8S_API_PORT
  # The front proxy's flags turn on the aggregation layer (KEDA's external metrics API). The
  # endpoint reconciler is off: the `kubernetes` Service may not point at a loopback address.
  spawn k8s-apiserver "$K8S_BIN/kube-apiserver" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
    --secure-port "$K8S_API_PORT" --etcd-servers "http://127.0.0.1:$K8S_ETCD_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" --client-ca-file "$pki/ca.crt" \
    --service-account-issuer "https://127.0.0.1:$K8S_API_PORT" --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --service-cluster-ip-range 10.0.0.0/24 \
    --authorization-mode Node,RBAC --allow-privileged=true --endpoint-reconciler-type none \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key"
}

k8s_start_controller-manager() {
  local pki
  pki="$(k8s_dir)/pki"
  ensure_port_free "$K8S_CONTROLLER_MANAGER_PORT" kube-controller-manager K8S_CONTROLLER_MANAGER_PORT
  # The HPA controller syncs every 5 s (15 s by default) so that scaling is seen sooner in tests.
  spawn k8s-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig "$(k8s_kubeconfig)" \
    --authentication-kubeconfig "$(k8s_kubeconfig)" --authorization-kubeconfig "$(k8s_kubeconfig)" \
    --bind-address 127.0.0.1 --secure-port "$K8S_CONTROLLER_MANAGER_PORT" --cert-dir "$(k8s_dir)/controller-manager" \
    --leader-elect=false --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=false --horizontal-pod-autoscaler-sync-period 5s
}

k8s_start_scheduler() {
  ensure_port_free "$K8S_SCHEDULER_PORT" kube-scheduler K8S_SCHEDULER_PORT
  spawn k8s-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig "$(k8s_kubeconfig)" \
    --authentication-kubeconfig "$(k8s_kubeconfig)" --authorization-kubeconfig "$(k8s_kubeconfig)" \
    --bind-address 127.0.0.1 --secure-port "$K8S_SCHEDULER_PORT" --cert-dir "$(k8s_dir)/scheduler" --leader-elect=false
}

k8s_node() { # k8s_node NAME LABELS TAINTS GPUS: a fake node for kwok to run
  k8s_apply /api/v1/nodes "$1" "apiVersion: v1
kind: Node
metadata:
  name: $1
  annotations: { kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: \"0\" }
  labels: { kubernetes.io/hostname: $1, type: kwok$2 }
spec:
  taints: [$3]
status:
  allocatable: { cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"$4\" }
  capacity: { cpu: \"64\", memory: 512Gi, pods: \"110\", nvidia.com/gpu: \"$4\" }" \
    || die "the API server refused the fake node $1"
}

k8s_nodes() { # GPU nodes as the chart's consumers ask for them (label, taint, nvidia.com/gpu), and a CPU node
  local i
  for ((i = 1; i <= K8S_GPU_NODES; i++)); do
    k8s_node "kwok-gpu-$i" ', nvidia.com/gpu.present: "true"' '{ key: nvidia.com/gpu, effect: NoSchedule }' 8
  done
  k8s_node kwok-cpu-1 "" "" 0
}

k8s_start_kwok() {
  ensure_port_free "$K8S_KWOK_PORT" kwok K8S_KWOK_PORT
  k8s_nodes
  spawn k8s-kwok "$K8S_BIN/kwok" --kubeconfig "$(k8s_kubeconfig)" --config "$K8S_BIN/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --cidr 10.244.0.1/16 --node-ip 10.255.0.1 --node-lease-duration-seconds 40 --server-address "127.0.0.1:$K8S_KWOK_PORT"
}

keda_env() { # what KEDA's processes read from their pod's environment
  KUBECONFIG="$(k8s_kubeconfig)" WATCH_NAMESPACE="" POD_NAMESPACE=keda KEDA_CLUSTER_OBJECT_NAMESPACE=keda \
    OPERATOR_NAME=keda-operator "$@"
}

k8s_start_keda-operator() {
  local port
  for port in "$K8S_KEDA_PORT" "$((K8S_KEDA_PORT + 1))" "$((K8S_KEDA_PORT + 2))"; do ensure_port_free "$port" keda-operator K8S_KEDA_PORT; done
  # KEDA's own CRDs from its module, and its namespace.
  local crd name
  for crd in "$K8S_BIN"/keda-crds/*.yaml; do
    name=$(basename "$crd" .yaml); name=${name#*_}.${name%%_*} # keda.sh_scaledobjects -> scaledobjects.keda.sh
    k8s_apply /apis/apiextensions.k8s.io/v1/customresourcedefinitions "$name" "$(cat "$crd")" || die "the API server refused KEDA's CRD $name"
  done
  k8s_apply /api/v1/namespaces keda 'apiVersion: v1
kind: Namespace
metadata: { name: keda }' || die "could not create the namespace keda"
  keda_env spawn k8s-keda-operator "$K8S_BIN/keda-operator" --kubeconfig "$(k8s_kubeconfig)" \
    --metrics-service-bind-address "127.0.0.1:$K8S_KEDA_PORT" --health-probe-bind-address "127.0.0.1:$((K8S_KEDA_PORT + 1))" \
    --metrics-bind-address "127.0.0.1:$((K8S_KEDA_PORT + 2))" --cert-dir "$(k8s_dir)/pki/keda-certs" \
    --ca-dir "$(k8s_dir)/pki/keda-certs" --leader-elect=false --zap-log-level info
}

k8s_start_keda-adapter() {
  ensure_port_free "$K8S_KEDA_ADAPTER_PORT" keda-adapter K8S_KEDA_ADAPTER_PORT
  ensure_port_free "$((K8S_KEDA_ADAPTER_PORT + 1))" "keda-adapter's metrics" K8S_KEDA_ADAPTER_PORT
  local certs
  certs="$(k8s_dir)/pki/keda-certs"
  # The aggregation layer reaches an APIService through a Service: an ExternalName one names
  # 127.0.0.1, where the metrics API server listens outside the (node-less) cluster.
  k8s_apply /api/v1/namespaces/keda/services keda-metrics-apiserver 'apiVersion: v1
kind: Service
metadata: { name: keda-metrics-apiserver, namespace: keda }
spec: { type: ExternalName, externalName: localhost }' || die "could not create the Service keda/keda-metrics-apiserver"
  k8s_apply /apis/apiregistration.k8s.io/v1/apiservices v1beta1.external.metrics.k8s.io "apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: { name: v1beta1.external.metrics.k8s.io }
spec:
  group: external.metrics.k8s.io
  version: v1beta1
  groupPriorityMinimum: 100
  versionPriority: 100
  insecureSkipTLSVerify: true
  service: { name: keda-metrics-apiserver, namespace: keda, port: $K8S_KEDA_ADAPTER_PORT }" \
    || die "could not register the APIService v1beta1.external.metrics.k8s.io"
  keda_env spawn k8s-keda-adapter "$K8S_BIN/keda-adapter" --kubeconfig "$(k8s_kubeconfig)" \
    --lister-kubeconfig "$(k8s_kubeconfig)" --authentication-kubeconfig "$(k8s_kubeconfig)" --authorization-kubeconfig "$(k8s_kubeconfig)" \
    --bind-address 127.0.0.1 --secure-port "$K8S_KEDA_ADAPTER_PORT" --port "$((K8S_KEDA_ADAPTER_PORT + 1))" \
    --cert-dir "$certs" --tls-cert-file "$certs/tls.crt" --tls-private-key-file "$certs/tls.key" \
    --metrics-service-address "127.0.0.1:$K8S_KEDA_PORT"
}

up_k8s() { # up_k8s NODE...: the parts that are not running, in order, each waited for
  install_k8s
  mkdir -p "$(k8s_dir)"
  k8s_pki
  local part
  for part in "${K8S_PARTS[@]}"; do
    [[ " $* " == *" k8s-$part "* ]] || continue
    "k8s_start_$part"
    wait_until "k8s-$part" 120 k8s_node_answers "k8s-$part"
  done
}
