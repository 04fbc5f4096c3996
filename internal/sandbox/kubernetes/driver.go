// Package kubernetes runs sandboxes as Kubernetes pods: one pod per
// sandbox, created through the API server with client-go.
//
// Each pod runs the agent in one container of a base image (busybox or an
// image with a language runtime), as an unprivileged user with every
// capability dropped, a read-only root file system, the runtime's default
// seccomp profile, no service account token and no service links. Its
// working directory and /tmp are emptyDirs of their own; /tmp lives in
// memory with the sandbox's /tmp limit as its size, so a full /tmp fails
// writes with ENOSPC rather than waiting for an eviction.
//
// Code bundles reach the pod without an image per agent: the driver serves
// each sandbox's CodeDir as a tar stream on an HTTP listener of its own (at
// a secret, single-sandbox URL), and an init container of the same base
// image fetches it with busybox's wget and unpacks it into the working
// directory. This works offline and needs no ConfigMap (whose 1 MiB cap is
// below a typical agent binary) and no registry.
//
// Container images (Spec.Image) are pulled by the node, not by Berth: the
// agent container runs the image by its reference (a digest), with no init
// container and no bundle, under the same security context. Its root file
// system is read-only like the base image's; /tmp is the writable emptyDir
// and the working directory is the image's own (no emptyDir over it). The
// agent runs as the image's user when that is not root; an image whose user
// is root (uid 0) runs as Options.UID instead, because without user
// namespaces, which Kubernetes does not give pods by default, the image's
// root would be the node's root. Private registries need
// Options.ImagePullSecrets.
//
// Berth reaches the agent on the pod's IP: DialContext dials the pod IP at
// the port of the address it is given. Kubernetes gives a pod a network
// interface of its own, so agents are not confined to loopback; a
// NetworkPolicy per sandbox (Options.AllowFrom) admits only Berth, where
// the cluster's network plugin enforces policies (the plain bridge plugin
// does not).
//
// Limits map to the container's requests and limits (memory, CPU) and to
// the size of /tmp. Kubernetes has no per-pod process limit: the kubelet's
// podPidsLimit caps every pod of the node alike, so Limits.Pids is not
// enforced per sandbox.
package kubernetes

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	mobyseccomp "github.com/moby/profiles/seccomp"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	k8s "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/berthrun/berth/internal/sandbox"
)

// Labels and annotations the driver puts on its pods.
const (
	// LabelManagedBy marks every pod of a Berth driver; its value is
	// Options.Owner.
	LabelManagedBy = "berth.run/owner"
	// LabelSandbox holds a label-safe form of the sandbox id.
	LabelSandbox = "berth.run/sandbox"
	// AnnotationID holds the sandbox id verbatim.
	AnnotationID = "berth.run/sandbox-id"
)

// Names of the pod's parts.
const (
	agentContainer = "agent"
	fetchContainer = "fetch-code"
	workVolume     = "work"
	tmpVolume      = "tmp"
)

// DefaultImage is the base image when Options.Image is empty: the one the
// test cluster of tools/k8s loads (busybox-static, no registry needed).
const DefaultImage = "localhost/busybox:local"

// DefaultUID is the uid (and gid) agents run as when Options.UID is zero.
const DefaultUID = 1000

// DefaultLimits are the limits of a sandbox whose Spec and Options.Defaults
// leave them zero, as the runc driver's.
func DefaultLimits() sandbox.Limits {
	return sandbox.Limits{MemoryBytes: 2 << 30, MilliCPUs: 2000, TmpBytes: 64 << 20}
}

// Options configure a Driver.
type Options struct {
	// Config reaches the API server. Nil means Kubeconfig, or the
	// in-cluster configuration when that is empty too.
	Config *rest.Config
	// Kubeconfig is a kubeconfig file, used when Config is nil.
	Kubeconfig string
	// Namespace is where the pods go. Required.
	Namespace string
	// Owner tells this Berth's pods apart from other Berths' in the same
	// namespace: Cleanup deletes only pods of its own owner. Empty means
	// "berth".
	Owner string

	// Image is the base image of the agent and init containers; it must
	// have busybox's sh, wget and tar for the code bundle. Empty means
	// DefaultImage.
	Image string
	// PullPolicy is the pull policy of the base image and of agents'
	// container images; empty means IfNotPresent (agents' images are
	// named by digest, so a cached copy is the same image).
	PullPolicy corev1.PullPolicy
	// ImagePullSecrets name Secrets (of type kubernetes.io/dockerconfigjson)
	// in Namespace that the kubelet pulls images with, for private
	// registries.
	ImagePullSecrets []string
	// RuntimeClassName, if set, runs pods with that RuntimeClass (gVisor,
	// Kata, ...).
	RuntimeClassName string
	// SeccompProfile, if set, is the path of a seccomp profile below the
	// kubelet's seccomp directory (a Localhost profile) that pods run
	// with, such as SeccompProfileJSON installed on every node as
	// "berth/default.json". Empty means the container runtime's default
	// profile, which may be laxer than Berth's (containerd 1.6's allows
	// io_uring).
	SeccompProfile string
	// UID is the uid and gid agents run as; zero means DefaultUID.
	UID int64

	// BundleListen is the TCP address the driver serves code bundles on,
	// which pods must be able to reach (e.g. the node bridge's address,
	// "10.244.0.1:0"). Required for specs with a CodeDir.
	BundleListen string
	// BundleURL is the base URL pods fetch bundles from, when it differs
	// from http://<BundleListen's address> (behind a Service or NAT).
	BundleURL string

	// AllowFrom, if set, makes the driver create a NetworkPolicy per
	// sandbox that admits connections only from these CIDRs (Berth's
	// addresses).
	AllowFrom []string

	// RequestPercent is what a sandbox requests of the node (what the
	// scheduler reserves for it), in percent of its limits, for memory
	// and CPU alike. Agents mostly wait on models and tools, so the
	// default is 5%: sandboxes are Burstable and many fit a node. 100
	// makes them Guaranteed.
	RequestPercent int64

	// Defaults replace the zero fields of a sandbox's limits. Its own
	// zero fields mean DefaultLimits.
	Defaults sandbox.Limits
	// StartTimeout bounds how long Start waits for the pod's agent to
	// run; zero means two minutes.
	StartTimeout time.Duration
	// Logger receives the driver's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Driver starts sandboxes as pods. It is safe for concurrent use. Close
// releases its watch and bundle server.
type Driver struct {
	client    k8s.Interface
	opts      Options
	log       *slog.Logger
	defaults  sandbox.Limits
	selector  labels.Selector
	bundles   *bundleServer // nil without Options.BundleListen
	cancel    context.CancelFunc
	informers informers.SharedInformerFactory

	mu        sync.Mutex
	sandboxes map[string]*Sandbox // by pod name
	ids       map[string]bool     // sandbox ids in use
}

// Pods can be relabelled: a warm pod, started for no session, is labelled
// with the session that claims it.
var _ sandbox.Labeler = (*Sandbox)(nil)

// New connects to the cluster and returns a driver. It fails with
// sandbox.ErrUnavailable when the API server cannot be reached.
func New(opts Options) (*Driver, error) {
	if opts.Namespace == "" {
		return nil, errors.New("kubernetes driver: no namespace")
	}
	if opts.Owner == "" {
		opts.Owner = "berth"
	}
	if errs := validLabelValue(opts.Owner); errs != "" {
		return nil, fmt.Errorf("kubernetes driver: owner %q: %s", opts.Owner, errs)
	}
	if opts.Image == "" {
		opts.Image = DefaultImage
	}
	switch opts.PullPolicy {
	case "":
		opts.PullPolicy = corev1.PullIfNotPresent
	case corev1.PullIfNotPresent, corev1.PullAlways, corev1.PullNever:
	default:
		return nil, fmt.Errorf("kubernetes driver: pull policy %q: want IfNotPresent, Always or Never", opts.PullPolicy)
	}
	if opts.UID == 0 {
		opts.UID = DefaultUID
	}
	if opts.UID < 0 {
		return nil, fmt.Errorf("kubernetes driver: uid %d: must be positive", opts.UID)
	}
	if opts.RequestPercent == 0 {
		opts.RequestPercent = 5
	}
	if opts.RequestPercent < 0 || opts.RequestPercent > 100 {
		return nil, fmt.Errorf("kubernetes driver: request percent %d: want 1 to 100", opts.RequestPercent)
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 2 * time.Minute
	}
	for _, name := range opts.ImagePullSecrets {
		if name == "" || len(name) > 253 || !secretNamePattern.MatchString(name) {
			return nil, fmt.Errorf("kubernetes driver: image pull secret %q: want a DNS subdomain name (lower-case letters, digits, '-' and '.')", name)
		}
	}
	for _, c := range opts.AllowFrom {
		if _, _, err := net.ParseCIDR(c); err != nil {
			return nil, fmt.Errorf("kubernetes driver: allow-from %q: %w", c, err)
		}
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	cfg := opts.Config
	if cfg == nil {
		var err error
		if opts.Kubeconfig != "" {
			cfg, err = clientcmd.BuildConfigFromFlags("", opts.Kubeconfig)
		} else {
			cfg, err = rest.InClusterConfig()
		}
		if err != nil {
			return nil, fmt.Errorf("kubernetes driver: %w: %w", sandbox.ErrUnavailable, err)
		}
	}
	cfg = rest.CopyConfig(cfg)
	if cfg.QPS == 0 {
		cfg.QPS, cfg.Burst = 50, 100
	}
	client, err := k8s.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("kubernetes driver: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.CoreV1().Namespaces().Get(ctx, opts.Namespace, metav1.GetOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("kubernetes driver: namespace %q does not exist", opts.Namespace)
		}
		return nil, fmt.Errorf("kubernetes driver: %w: reach the API server at %s: %w", sandbox.ErrUnavailable, cfg.Host, err)
	}

	d := &Driver{
		client:    client,
		opts:      opts,
		log:       logger,
		defaults:  opts.Defaults.Or(DefaultLimits()),
		selector:  labels.SelectorFromSet(labels.Set{LabelManagedBy: opts.Owner}),
		sandboxes: make(map[string]*Sandbox),
		ids:       make(map[string]bool),
	}
	if err := checkLimits(d.defaults); err != nil {
		return nil, fmt.Errorf("kubernetes driver: default limits: %w", err)
	}
	if opts.BundleListen != "" {
		d.bundles, err = newBundleServer(opts.BundleListen, opts.BundleURL, logger)
		if err != nil {
			return nil, fmt.Errorf("kubernetes driver: %w", err)
		}
	}
	watchCtx, stop := context.WithCancel(context.Background())
	d.cancel = stop
	d.informers = informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithNamespace(opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = d.selector.String() }))
	pods := d.informers.Core().V1().Pods().Informer()
	if _, err := pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { d.observe(obj, false) },
		UpdateFunc: func(_, obj any) { d.observe(obj, false) },
		DeleteFunc: func(obj any) { d.observe(obj, true) },
	}); err != nil {
		d.Close()
		return nil, fmt.Errorf("kubernetes driver: watch pods: %w", err)
	}
	d.informers.Start(watchCtx.Done())
	syncCtx, cancelSync := context.WithTimeout(watchCtx, 30*time.Second)
	defer cancelSync()
	if !cache.WaitForCacheSync(syncCtx.Done(), pods.HasSynced) {
		d.Close()
		return nil, fmt.Errorf("kubernetes driver: %w: pods of namespace %q could not be listed", sandbox.ErrUnavailable, opts.Namespace)
	}
	return d, nil
}

// Close stops the driver's watch and bundle server. Its pods keep running
// (Cleanup of a later driver removes them).
func (d *Driver) Close() error {
	d.cancel()
	d.informers.Shutdown()
	if d.bundles != nil {
		return d.bundles.Close()
	}
	return nil
}

// observe hands a pod event to the sandbox of the pod, if this driver has
// one.
func (d *Driver) observe(obj any, deleted bool) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj, deleted = t.Obj, true
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	d.mu.Lock()
	sb := d.sandboxes[pod.Name]
	d.mu.Unlock()
	if sb != nil && sb.uidIs(pod.UID) {
		sb.observe(pod, deleted)
		if deleted {
			// Also the sandboxes nobody will Stop: those attached to
			// by a replica that does not own their session.
			d.forget(sb)
		}
	}
}

var (
	labelKeyPattern   = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$`)
	labelValuePattern = regexp.MustCompile(`^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$`)
	secretNamePattern = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`)
)

// validate checks what a spec must satisfy for this driver.
func validate(s sandbox.Spec) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(s.RootLayers) > 0 {
		return errors.New("root layers: the kubernetes driver runs container images by reference (Spec.Image), pulled by the node, not from unpacked layers")
	}
	if s.Image != "" {
		// The image's own working directory: nothing is mounted over it.
		if !path.IsAbs(s.WorkDir) || path.Clean(s.WorkDir) != s.WorkDir {
			return fmt.Errorf("work dir %q: want a clean absolute directory", s.WorkDir)
		}
	} else if !path.IsAbs(s.WorkDir) || path.Clean(s.WorkDir) != s.WorkDir || s.WorkDir == "/" || s.WorkDir == "/tmp" || strings.HasPrefix(s.WorkDir, "/tmp/") {
		return fmt.Errorf("work dir %q: want a clean absolute directory other than / and /tmp", s.WorkDir)
	}
	if s.CodeDir != "" && !path.IsAbs(s.CodeDir) {
		return fmt.Errorf("code dir %q: want an absolute path", s.CodeDir)
	}
	for k := range s.Labels {
		if !labelKeyPattern.MatchString(k) {
			return fmt.Errorf("label %q: want 1 to 40 characters of [a-z0-9-]", k)
		}
	}
	if err := s.Network.Validate(); err != nil {
		return err
	}
	return checkLimits(s.Limits)
}

// checkLimits refuses negative limits.
func checkLimits(l sandbox.Limits) error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"memory", l.MemoryBytes}, {"cpu", l.MilliCPUs}, {"pids", l.Pids}, {"tmp", l.TmpBytes}} {
		if f.v < 0 {
			return fmt.Errorf("%s limit %d: must not be negative", f.name, f.v)
		}
	}
	return nil
}

// PodName returns the name of sandbox id's pod: readable, DNS-safe and
// unique (ids differing only in case or in characters a name cannot hold
// get different hashes).
func PodName(id string) string { return "berth-" + labelID(id) }

// labelID is the label-safe form of id: its lower-cased, sanitised prefix
// and a hash of the whole id.
func labelID(id string) string {
	sum := sha256.Sum256([]byte(id))
	var b strings.Builder
	for _, r := range strings.ToLower(id) {
		if b.Len() == 40 {
			break
		}
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteByte('-')
		}
	}
	prefix := strings.Trim(b.String(), "-")
	if prefix == "" {
		return hex.EncodeToString(sum[:6])
	}
	return prefix + "-" + hex.EncodeToString(sum[:6])
}

// validLabelValue returns why v is not a label value, or "".
func validLabelValue(v string) string {
	if len(v) > 63 || !labelValuePattern.MatchString(v) {
		return "want at most 63 characters of [A-Za-z0-9_.-], starting and ending with a letter or digit"
	}
	return ""
}

// Start creates the sandbox's pod and waits until its agent runs (or has
// already exited). A pod whose agent cannot be started (missing program,
// image not found, bundle not fetched) is deleted and reported as the
// error.
func (d *Driver) Start(ctx context.Context, spec sandbox.Spec) (sandbox.Sandbox, error) {
	if err := validate(spec); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	if spec.CodeDir != "" {
		if d.bundles == nil {
			return nil, fmt.Errorf("start sandbox %q: code dir %s: the driver has no bundle server (Options.BundleListen)", spec.ID, spec.CodeDir)
		}
		if fi, err := os.Stat(spec.CodeDir); err != nil {
			return nil, fmt.Errorf("start sandbox %q: code dir: %w", spec.ID, err)
		} else if !fi.IsDir() {
			return nil, fmt.Errorf("start sandbox %q: code dir %s is not a directory", spec.ID, spec.CodeDir)
		}
	}
	name := PodName(spec.ID)
	d.mu.Lock()
	if d.ids[spec.ID] || d.sandboxes[name] != nil {
		d.mu.Unlock()
		return nil, fmt.Errorf("start sandbox %q: a sandbox with this id is running", spec.ID)
	}
	sb := newSandbox(d, spec.ID, name)
	d.ids[spec.ID] = true
	d.sandboxes[name] = sb
	d.mu.Unlock()

	ok := false
	defer func() {
		if !ok {
			d.forget(sb)
		}
	}()

	if err := sb.openOutput(spec.Stdout, spec.Stderr); err != nil {
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	var bundleURL string
	if spec.CodeDir != "" {
		token := randomHex(16)
		bundleURL = d.bundles.add(token, spec.CodeDir)
		sb.bundleToken = token
	}
	pod := d.podFor(spec, name, bundleURL)
	created, err := d.client.CoreV1().Pods(d.opts.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		sb.closeOutput()
		if apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("start sandbox %q: pod %s already exists (a sandbox with this id is running)", spec.ID, name)
		}
		return nil, fmt.Errorf("start sandbox %q: create pod: %w", spec.ID, err)
	}
	sb.setUID(created.UID)
	if len(d.opts.AllowFrom) > 0 {
		if err := d.createPolicy(ctx, spec, created, bundleURL); err != nil {
			d.stopQuietly(sb)
			return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, d.opts.StartTimeout)
	defer cancel()
	select {
	case <-sb.started:
	case <-waitCtx.Done():
		d.stopQuietly(sb)
		return nil, fmt.Errorf("start sandbox %q: pod %s did not start: %w (%s)", spec.ID, name, waitCtx.Err(), sb.lastStatus())
	}
	if err := sb.startErr(); err != nil {
		d.stopQuietly(sb)
		return nil, fmt.Errorf("start sandbox %q: %w", spec.ID, err)
	}
	d.bundleDone(sb)
	ok = true
	return sb, nil
}

// stopQuietly stops a sandbox whose Start failed, logging a failure.
func (d *Driver) stopQuietly(sb *Sandbox) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sb.Stop(ctx); err != nil {
		d.log.Warn("kubernetes driver: delete the pod of a failed start", "sandbox", sb.id, "err", err)
	}
}

// forget drops sb from the driver's tables.
func (d *Driver) forget(sb *Sandbox) {
	d.bundleDone(sb)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.sandboxes[sb.name] == sb {
		delete(d.sandboxes, sb.name)
		delete(d.ids, sb.id)
	}
}

// bundleDone withdraws sb's bundle URL: once the agent runs, its code has
// been fetched.
func (d *Driver) bundleDone(sb *Sandbox) {
	if d.bundles != nil && sb.bundleToken != "" {
		d.bundles.remove(sb.bundleToken)
	}
}

// podFor builds the pod of spec.
func (d *Driver) podFor(spec sandbox.Spec, name, bundleURL string) *corev1.Pod {
	lim := spec.Limits.Or(d.defaults)
	limits := corev1.ResourceList{
		corev1.ResourceMemory: *resource.NewQuantity(lim.MemoryBytes, resource.BinarySI),
		corev1.ResourceCPU:    *resource.NewMilliQuantity(lim.MilliCPUs, resource.DecimalSI),
	}
	pct := d.opts.RequestPercent
	requests := corev1.ResourceList{
		corev1.ResourceMemory: *resource.NewQuantity(max(lim.MemoryBytes*pct/100, 1<<20), resource.BinarySI),
		corev1.ResourceCPU:    *resource.NewMilliQuantity(max(lim.MilliCPUs*pct/100, 1), resource.DecimalSI),
	}
	uid, gid, groups := d.runAs(spec)
	no, yes := false, true
	// The shortest grace period that is not a forced deletion (see
	// deletePod); the kubelet still waits at least 2 s for an agent that
	// ignores SIGTERM before it kills it.
	grace := int64(1)
	tmpSize := resource.NewQuantity(lim.TmpBytes, resource.BinarySI)
	seccomp := &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}
	if d.opts.SeccompProfile != "" {
		seccomp = &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeLocalhost, LocalhostProfile: &d.opts.SeccompProfile}
	}
	container := func(name string) corev1.Container {
		return corev1.Container{
			Name:            name,
			Image:           d.opts.Image,
			ImagePullPolicy: d.opts.PullPolicy,
			Resources:       corev1.ResourceRequirements{Limits: limits, Requests: requests},
			SecurityContext: &corev1.SecurityContext{
				Privileged:               &no,
				AllowPrivilegeEscalation: &no,
				ReadOnlyRootFilesystem:   &yes,
				RunAsNonRoot:             &yes,
				RunAsUser:                &uid,
				RunAsGroup:               &gid,
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				SeccompProfile:           seccomp,
			},
			VolumeMounts: []corev1.VolumeMount{
				{Name: workVolume, MountPath: spec.WorkDir},
				{Name: tmpVolume, MountPath: "/tmp"},
			},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}
	}
	agent := container(agentContainer)
	if spec.Image != "" {
		agent.Image = spec.Image
		agent.VolumeMounts = slices.DeleteFunc(agent.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == workVolume })
	}
	agent.Command = spec.Args
	agent.WorkingDir = spec.WorkDir
	for _, kv := range spec.Env {
		k, v, _ := strings.Cut(kv, "=")
		agent.Env = append(agent.Env, corev1.EnvVar{Name: k, Value: v})
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Namespace:   d.opts.Namespace,
			Labels:      map[string]string{LabelManagedBy: d.opts.Owner, LabelSandbox: labelID(spec.ID)},
			Annotations: map[string]string{AnnotationID: spec.ID},
		},
		Spec: corev1.PodSpec{
			RestartPolicy:                 corev1.RestartPolicyNever,
			AutomountServiceAccountToken:  &no,
			EnableServiceLinks:            &no,
			TerminationGracePeriodSeconds: &grace,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:       &yes,
				RunAsUser:          &uid,
				RunAsGroup:         &gid,
				FSGroup:            &gid,
				SupplementalGroups: groups,
				SeccompProfile:     seccomp,
			},
			Containers: []corev1.Container{agent},
			Volumes: []corev1.Volume{
				{Name: workVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				// In memory, so that its size is a tmpfs size (ENOSPC when
				// full); it counts against the memory limit, as the runc
				// driver's /tmp does.
				{Name: tmpVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{Medium: corev1.StorageMediumMemory, SizeLimit: tmpSize}}},
			},
		},
	}
	// The spec's labels become berth.run/<key> annotations, and labels too
	// where the value fits in one (session ids may be too long).
	for k, v := range spec.Labels {
		pod.Annotations["berth.run/"+k] = v
		if validLabelValue(v) == "" {
			pod.Labels["berth.run/"+k] = v
		}
	}
	if spec.Image != "" {
		pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == workVolume })
	}
	for _, name := range d.opts.ImagePullSecrets {
		pod.Spec.ImagePullSecrets = append(pod.Spec.ImagePullSecrets, corev1.LocalObjectReference{Name: name})
	}
	if d.opts.RuntimeClassName != "" {
		pod.Spec.RuntimeClassName = &d.opts.RuntimeClassName
	}
	if bundleURL != "" {
		fetch := container(fetchContainer)
		// The URL is the sandbox's secret; it is withdrawn once the agent
		// runs. The tar goes through the working directory, not /tmp,
		// whose size is the agent's.
		fetch.Command = []string{"sh", "-c", `set -e; f="$WORK_DIR/.berth-bundle.tar"; wget -q -O "$f" "$BUNDLE_URL"; tar -x -f "$f" -C "$WORK_DIR"; rm -f "$f"`}
		fetch.Env = []corev1.EnvVar{{Name: "BUNDLE_URL", Value: bundleURL}, {Name: "WORK_DIR", Value: spec.WorkDir}}
		pod.Spec.InitContainers = []corev1.Container{fetch}
	}
	return pod
}

// runAs returns the uid, gid and supplementary groups of spec's agent: the
// image's user for an image whose user is not root, otherwise the driver's
// UID (as uid and gid). An image's root is not run as root: pods have no
// user namespace to map it into (see the package doc).
func (d *Driver) runAs(spec sandbox.Spec) (uid, gid int64, groups []int64) {
	if spec.Image == "" || spec.User.UID == 0 {
		return d.opts.UID, d.opts.UID, nil
	}
	for _, g := range spec.User.AdditionalGids {
		groups = append(groups, int64(g))
	}
	return int64(spec.User.UID), int64(spec.User.GID), groups
}

// createPolicy creates the NetworkPolicy that admits only Berth to the
// sandbox's pod and lets it connect nowhere unless its network mode allows
// it, but for the init container's fetch of bundleURL (if not empty). The
// pod owns it, so it goes with the pod.
func (d *Driver) createPolicy(ctx context.Context, spec sandbox.Spec, pod *corev1.Pod, bundleURL string) error {
	var from []networkingv1.NetworkPolicyPeer
	for _, c := range d.opts.AllowFrom {
		from = append(from, networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: c}})
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	var egress []networkingv1.NetworkPolicyEgressRule
	switch spec.Network.Mode {
	case "", sandbox.NetworkNone:
		types = append(types, networkingv1.PolicyTypeEgress) // no rule: nothing allowed
	case sandbox.NetworkAllowlist:
		types = append(types, networkingv1.PolicyTypeEgress)
		for _, dst := range spec.Network.Allow {
			to := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: dst.Prefix.String()}}
			egress = append(egress, networkingv1.NetworkPolicyEgressRule{To: []networkingv1.NetworkPolicyPeer{to}})
		}
	}
	if len(types) == 2 && bundleURL != "" {
		// The init container must reach the bundle server, whatever the
		// agent may reach. Once the agent runs its URL is withdrawn.
		if rule, ok := egressTo(bundleURL); ok {
			egress = append(egress, rule)
		}
	}
	yes := true
	np := &networkingv1.NetworkPolicy{
		ObjectMeta: metav1.ObjectMeta{
			Name:      pod.Name,
			Namespace: pod.Namespace,
			Labels:    pod.Labels,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID, BlockOwnerDeletion: &yes,
			}},
		},
		Spec: networkingv1.NetworkPolicySpec{
			// By the labels that name the sandbox alone: the others may
			// change (a warm pod is labelled with the session that claims
			// it), and a policy whose selector no longer matched would
			// stop applying.
			PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{
				LabelManagedBy: pod.Labels[LabelManagedBy], LabelSandbox: pod.Labels[LabelSandbox]}},
			PolicyTypes: types,
			Ingress:     []networkingv1.NetworkPolicyIngressRule{{From: from}},
			Egress:      egress,
		},
	}
	policies := d.client.NetworkingV1().NetworkPolicies(pod.Namespace)
	_, err := policies.Create(ctx, np, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The policy of an earlier pod of the same name, which the garbage
		// collector has not removed yet.
		if err := d.deletePolicy(ctx, pod.Name); err != nil {
			return err
		}
		_, err = policies.Create(ctx, np, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("create network policy: %w", err)
	}
	return nil
}

// deletePolicy deletes a sandbox's NetworkPolicy, if there is one. The pod
// owns it, so the garbage collector would too, but later.
func (d *Driver) deletePolicy(ctx context.Context, name string) error {
	if len(d.opts.AllowFrom) == 0 {
		return nil
	}
	err := d.client.NetworkingV1().NetworkPolicies(d.opts.Namespace).Delete(ctx, name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete network policy %s: %w", name, err)
	}
	return nil
}

// deletePod deletes a pod by name and uid and waits until it is gone.
//
// A running pod is deleted with its grace period of one second, so the API
// object disappears only once the kubelet has killed its containers and
// torn down its sandbox. A grace period of zero would be a forced
// deletion: the object would go at once and the containers would die
// later, unobserved. (A pod whose agent has exited is deleted at once by
// the API server; its containers are dead already.) gone, if not nil, is
// closed when the driver's watch sees the pod deleted.
func (d *Driver) deletePod(ctx context.Context, name string, uid string, gone <-chan struct{}) error {
	pods := d.client.CoreV1().Pods(d.opts.Namespace)
	opts := metav1.DeleteOptions{}
	if uid != "" {
		u := types.UID(uid)
		opts.Preconditions = &metav1.Preconditions{UID: &u}
	}
	err := pods.Delete(ctx, name, opts)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("delete pod %s: %w", name, err)
	}
	// The watch says when the pod is gone (gone, for a sandbox of this
	// driver); reading it now and then covers a watch that lags. Reading
	// it every 100 ms instead would, with a hundred pods going at once,
	// exceed the client's rate limit and slow every other call.
	delay := 100 * time.Millisecond
	for {
		select {
		case <-ctx.Done():
			return fmt.Errorf("delete pod %s: wait until it is gone: %w", name, ctx.Err())
		case <-gone:
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err) || (err == nil && uid != "" && string(p.UID) != uid):
			return nil
		case apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err):
			return fmt.Errorf("delete pod %s: wait until it is gone: %w", name, err)
		}
	}
}

// Cleanup deletes the pods of this driver's owner that it did not start
// (those of an earlier run of Berth) and waits until they are gone.
func (d *Driver) Cleanup(ctx context.Context) error {
	list, err := d.client.CoreV1().Pods(d.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: d.selector.String()})
	if err != nil {
		return fmt.Errorf("cleanup: list pods: %w", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, len(list.Items))
	for i, p := range list.Items {
		d.mu.Lock()
		sb := d.sandboxes[p.Name]
		d.mu.Unlock()
		if sb != nil && sb.uidIs(p.UID) {
			continue
		}
		d.log.Info("kubernetes driver: deleting an orphaned pod", "pod", p.Name, "sandbox", p.Annotations[AnnotationID])
		wg.Go(func() { errs[i] = d.deletePod(ctx, p.Name, string(p.UID), nil) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	return nil
}

// SeccompProfileJSON returns the seccomp profile the runc driver applies
// (Docker's default, evaluated for processes without capabilities) in the
// OCI runtime-spec format, which is how containerd reads a Localhost
// profile: as is, without Docker's conditions on capabilities (so
// Docker's own JSON would allow what it grants CAP_SYS_ADMIN). Installed
// on every node below the kubelet's seccomp directory, it is
// Options.SeccompProfile.
func SeccompProfileJSON() ([]byte, error) {
	p, err := mobyseccomp.GetDefaultProfile(&specs.Spec{Process: &specs.Process{Capabilities: &specs.LinuxCapabilities{}}})
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	data, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("seccomp profile: %w", err)
	}
	return data, nil
}

// bundleServer serves code directories as tar streams to init containers.
type bundleServer struct {
	ln   net.Listener
	srv  *http.Server
	base string
	log  *slog.Logger

	mu   sync.Mutex
	dirs map[string]string // token -> code dir
}

func newBundleServer(listen, base string, logger *slog.Logger) (*bundleServer, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("bundle server: %w", err)
	}
	if base == "" {
		base = "http://" + ln.Addr().String()
	}
	b := &bundleServer{ln: ln, base: strings.TrimSuffix(base, "/"), log: logger, dirs: make(map[string]string)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /bundles/{token}", b.serve)
	b.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := b.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Error("kubernetes driver: bundle server", "err", err)
		}
	}()
	return b, nil
}

// add publishes dir and returns its URL.
func (b *bundleServer) add(token, dir string) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.dirs[token] = dir
	return b.base + "/bundles/" + token
}

func (b *bundleServer) remove(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.dirs, token)
}

func (b *bundleServer) serve(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	dir, ok := b.dirs[r.PathValue("token")]
	b.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	if err := writeTar(w, dir); err != nil {
		// The status is sent: the init container sees a short tar and
		// fails, which fails Start.
		b.log.Warn("kubernetes driver: serve a code bundle", "dir", dir, "err", err)
	}
}

// Close stops serving bundles.
func (b *bundleServer) Close() error { return b.srv.Close() }

func randomHex(n int) string {
	buf := make([]byte, n)
	rand.Read(buf)
	return hex.EncodeToString(buf)
}

// egressTo returns the egress rule that lets a pod connect to the host and
// port of rawURL, if its host is an IP address (a policy cannot name hosts).
func egressTo(rawURL string) (networkingv1.NetworkPolicyEgressRule, bool) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return networkingv1.NetworkPolicyEgressRule{}, false
	}
	ip, err := netip.ParseAddr(u.Hostname())
	if err != nil {
		return networkingv1.NetworkPolicyEgressRule{}, false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"https": "443"}[u.Scheme]
		if port == "" {
			port = "80"
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return networkingv1.NetworkPolicyEgressRule{}, false
	}
	tcp, p := corev1.ProtocolTCP, intstr.FromInt32(int32(n))
	return networkingv1.NetworkPolicyEgressRule{
		To:    []networkingv1.NetworkPolicyPeer{{IPBlock: &networkingv1.IPBlock{CIDR: netip.PrefixFrom(ip, ip.BitLen()).String()}}},
		Ports: []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: &p}},
	}, true
}
