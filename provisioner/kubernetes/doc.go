// Package kubernetes runs Calipso workloads (remote desktops, notebooks) on a
// Kubernetes cluster: one bare Pod and one Service per resource record, both named
// provisioner.Name(instance, id) in one namespace and labelled for reconciliation.
//
// Why a bare Pod and not a Deployment: a desktop belongs to one user and one launch.
// Its data arrives as hostPath mounts that exist on the nodes the facility prepared,
// and its Guacamole record points at the node address and NodePort. If the node dies
// or the kubelet evicts the pod, a Deployment would silently start a fresh desktop
// elsewhere — with the user's session gone, DirectoryOrCreate results folders created
// empty on the new node, and the launch service still believing the old one runs. A
// bare Pod instead fails visibly (phase Failed, reason Evicted, or Unknown when the
// node is lost); the reconciler sees StateError and the user relaunches, which also
// keeps quotas honest. Stop and Remove map directly: Stop deletes the Pod and keeps
// the Service (the NodePort, hence the Guacamole record, survives and Inspect reports
// StateStopped); Start of a stopped name creates the Pod again; Remove deletes both.
// It also means no controller is needed for anything to happen, which the tests
// (kube-apiserver and etcd only) rely on.
//
// The pod runs with restartPolicy OnFailure: a crashing desktop is restarted in place
// (CrashLoopBackOff is reported as StateError), a clean exit (the user logged out,
// Jupyter was shut down) ends in phase Succeeded, reported as StateStopped.
//
// Kubernetes label values cannot hold "@" or "~", so the owner and experiment labels
// carry a sanitised value and the exact values are kept in annotations of the same
// keys; selection only ever uses the managed-by, instance and resource labels.
//
// Volumes (Config.Volumes):
//   - hostPath (default, as CalipsoPlus): each Mount.Source is a node path; read-only
//     mounts use type Directory (a missing dataset is an error, not an empty folder),
//     read-write ones DirectoryOrCreate.
//   - nfs: each Mount.Source is a path exported by Config.NFSServer.
//   - pvc: one PersistentVolumeClaim (Config.Claim) holds the data; each Mount.Source
//     must lie under Config.ClaimRoot and is mounted as a subPath of the claim.
//
// Secrets (Spec.Secrets: the VNC password) are not in the pod, whose spec whoever may
// read pods sees, but in a Secret of the workload's name, labelled as its pod and
// Service, mounted read-only at provisioner.SecretsDir. It lives as long as the pod:
// Start creates it before the pod (the kubelet waits for it), Stop and Remove delete
// it with the pod. Its files are root's with mode 0444: a Secret volume's files can
// be given to a group only through the pod's fsGroup, which would also re-own every
// volume that supports it (the pvc mode's claim, with all its datasets) at each start;
// the pod's processes are all the workload's uid anyway. The provisioner's Role needs
// get, create and delete on Secrets (deploy/kubernetes/calipso-provisioner-role.yaml);
// RBAC cannot narrow those to the names Calipso makes, so the workloads' namespace
// should hold no other Secrets. A Role without them still stops and removes
// workloads (there can be no Secret to delete), but Start of one with secrets fails.
//
// Requests equal limits (Guaranteed QoS): Calipso's quotas count limits, so the
// scheduler must reserve what the quota granted. Spec.DiskBytes becomes an
// ephemeral-storage limit, which the kubelet enforces by evicting the pod.
//
// Processes: a pod cannot ask for a pids limit (there is no such resource nor
// securityContext field), so Spec.PidsLimit (workloads.pids_limit, or the image's
// pids_limit) is ignored and Capabilities.PidsLimit is false. What Kubernetes offers is
// node-wide: the kubelet's podPidsLimit (KubeletConfiguration; the --pod-max-pids
// flag) caps the processes and threads of every pod on the node at one value. Set it
// on the nodes that run workloads, for example
//
//	apiVersion: kubelet.config.k8s.io/v1beta1
//	kind: KubeletConfiguration
//	podPidsLimit: 1024
//
// otherwise a fork bomb in a desktop is bounded only by the node's pid_max.
// (systemReserved/kubeReserved "pid" keeps some pids for the node itself.)
//
// Start waits up to Config.ReadyTimeout for the pod to run and become ready, then
// follows its log for Spec.LogRegex; a notebook's Instance.URL then carries the token
// it matched (provisioner.LinkURL). ReadyTimeout 0 returns as soon as the objects
// exist (StatePending). The envtest tests have no kubelet: the log test registers a
// node whose kubelet endpoint is served by the test, and the API server proxies to it.
package kubernetes
