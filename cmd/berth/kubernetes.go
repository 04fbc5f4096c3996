package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/berthrun/berth/internal/sandbox"
	"github.com/berthrun/berth/internal/sandbox/kubernetes"
)

// kubeFlags are the server's flags for the kubernetes sandbox driver.
type kubeFlags struct {
	driver       string
	kubeconfig   string
	namespace    string
	owner        string
	image        string
	runtimeClass string
	seccomp      string
	bundleListen string
	bundleURL    string
	allowFrom    []string
	requestPct   int64
	pullSecrets  []string
	pullPolicy   string
}

func (k *kubeFlags) register(f *pflag.FlagSet) {
	f.StringVar(&k.driver, "driver", envOr("BERTH_DRIVER", "oci"), "what runs sandboxes: oci (runc, crun or runsc on this host) or kubernetes (one pod per session) (env BERTH_DRIVER)")
	f.StringVar(&k.kubeconfig, "kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig of the cluster for --driver kubernetes; empty means the in-cluster configuration (env KUBECONFIG)")
	f.StringVar(&k.namespace, "namespace", envOr("BERTH_NAMESPACE", "berth-sandboxes"), "namespace of the sandboxes' pods (env BERTH_NAMESPACE)")
	f.StringVar(&k.owner, "kube-owner", "berth", "value of the berth.run/owner label of this server's pods, shared by replicas of one Berth; pods of this owner that no session in the store and no live replica accounts for are deleted")
	f.StringVar(&k.image, "kube-image", kubernetes.DefaultImage, "base image of the sandboxes' pods (needs sh, wget and tar to fetch code bundles)")
	f.StringVar(&k.runtimeClass, "kube-runtime-class", "", "RuntimeClass of the sandboxes' pods (e.g. gvisor or kata)")
	f.StringVar(&k.seccomp, "kube-seccomp-profile", "", "Localhost seccomp profile of the pods, below the kubelet's seccomp directory, e.g. berth/default.json holding the output of berth kube-seccomp-profile; empty means the runtime's default")
	f.StringVar(&k.bundleListen, "kube-bundle-listen", "", "address (host:port) to serve code bundles to the pods' init containers on; pods must reach it")
	f.StringVar(&k.bundleURL, "kube-bundle-url", "", "base URL pods fetch code bundles from, if not http://<kube-bundle-listen>")
	f.StringArrayVar(&k.allowFrom, "kube-allow-from", nil, "CIDR of this server as pods see it: each pod gets a NetworkPolicy admitting only these (repeat for more)")
	f.Int64Var(&k.requestPct, "kube-request-percent", 5, "what a pod requests of its node, in percent of its limits")
	f.StringArrayVar(&k.pullSecrets, "kube-image-pull-secret", nil, "Secret (kubernetes.io/dockerconfigjson) in --namespace the nodes pull container images with, for private registries (repeat for more)")
	f.StringVar(&k.pullPolicy, "kube-pull-policy", string(corev1.PullIfNotPresent), "pull policy of the pods' images: IfNotPresent, Always or Never (runtimes' images are named by digest)")
}

// newDriver makes the kubernetes driver the flags describe.
func (k *kubeFlags) newDriver(defaults sandbox.Limits, log *slog.Logger) (*kubernetes.Driver, error) {
	d, err := kubernetes.New(kubernetes.Options{
		Kubeconfig:       k.kubeconfig,
		Namespace:        k.namespace,
		Owner:            k.owner,
		Image:            k.image,
		RuntimeClassName: k.runtimeClass,
		SeccompProfile:   k.seccomp,
		BundleListen:     k.bundleListen,
		BundleURL:        k.bundleURL,
		AllowFrom:        k.allowFrom,
		RequestPercent:   k.requestPct,
		ImagePullSecrets: k.pullSecrets,
		PullPolicy:       corev1.PullPolicy(k.pullPolicy),
		Defaults:         sandbox.Limits{MemoryBytes: defaults.MemoryBytes, MilliCPUs: defaults.MilliCPUs, TmpBytes: defaults.TmpBytes},
		Logger:           log,
	})
	if err != nil {
		return nil, fmt.Errorf("--driver kubernetes: %w", err)
	}
	return d, nil
}

// kubeSeccompCommand prints the seccomp profile for --kube-seccomp-profile.
func kubeSeccompCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "kube-seccomp-profile",
		Short: "Print the seccomp profile of the kubernetes driver's pods",
		Long: `Print the seccomp profile the OCI driver applies to sandboxes (Docker's default,
for processes without capabilities) in the OCI runtime-spec format containerd reads
Localhost profiles in. Save it on every node below the kubelet's seccomp directory
(e.g. /var/lib/kubelet/seccomp/berth/default.json) and run the server with
--kube-seccomp-profile berth/default.json.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := kubernetes.SeccompProfileJSON()
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(append(data, '\n'))
			return err
		},
	}
}
