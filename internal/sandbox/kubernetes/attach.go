package kubernetes

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/sandbox"
)

// The driver is shared: pods outlive the Berth that created them and any
// Berth with the same Owner can reach them.
var _ sandbox.Shared = (*Driver)(nil)

// Attach implements sandbox.Shared. A pod still starting (on another
// replica) is waited for, up to Options.StartTimeout.
func (d *Driver) Attach(ctx context.Context, id string) (sandbox.Sandbox, error) {
	name := PodName(id)
	d.mu.Lock()
	sb := d.sandboxes[name]
	d.mu.Unlock()
	if sb == nil || sb.id != id {
		pod, err := d.getPod(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("attach sandbox %q: %w", id, err)
		}
		sb = newSandbox(d, id, name)
		sb.setUID(pod.UID)
		d.mu.Lock()
		if other := d.sandboxes[name]; other != nil {
			sb = other // attached or started meanwhile
		} else {
			d.sandboxes[name], d.ids[id] = sb, true
		}
		d.mu.Unlock()
		sb.observe(pod, false)
		// From now on the watch updates sb; a deletion between the first
		// read and now is caught by reading again.
		if pod, err = d.getPod(ctx, id); err != nil {
			d.forget(sb)
			return nil, fmt.Errorf("attach sandbox %q: %w", id, err)
		}
		if sb.uidIs(pod.UID) {
			sb.observe(pod, false)
		}
	}
	waitCtx, cancel := context.WithTimeout(ctx, d.opts.StartTimeout)
	defer cancel()
	select {
	case <-sb.started:
	case <-waitCtx.Done():
		return nil, fmt.Errorf("attach sandbox %q: pod %s did not start: %w (%s)", id, name, waitCtx.Err(), sb.lastStatus())
	}
	if err := sb.startErr(); err != nil {
		return nil, fmt.Errorf("attach sandbox %q: %w: %w", id, sandbox.ErrNotFound, err)
	}
	if isClosed(sb.done) {
		return nil, fmt.Errorf("attach sandbox %q: %w: the agent has exited (%v)", id, sandbox.ErrNotFound, sb.Err())
	}
	return sb, nil
}

// getPod reads the pod of sandbox id from the API server (not the watch's
// cache, which may not have seen a pod another replica just created). A pod
// being deleted counts as gone.
func (d *Driver) getPod(ctx context.Context, id string) (*corev1.Pod, error) {
	pod, err := d.client.CoreV1().Pods(d.opts.Namespace).Get(ctx, PodName(id), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, sandbox.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("get pod: %w", err)
	}
	if pod.Labels[LabelManagedBy] != d.opts.Owner || pod.Annotations[AnnotationID] != id || pod.DeletionTimestamp != nil {
		return nil, sandbox.ErrNotFound
	}
	return pod, nil
}

// List implements sandbox.Shared from the driver's watch of its pods.
func (d *Driver) List(ctx context.Context) ([]sandbox.Listing, error) {
	pods, err := d.informers.Core().V1().Pods().Lister().Pods(d.opts.Namespace).List(d.selector)
	if err != nil {
		return nil, fmt.Errorf("list sandboxes: %w", err)
	}
	out := make([]sandbox.Listing, 0, len(pods))
	for _, p := range pods {
		id := p.Annotations[AnnotationID]
		if id == "" || p.DeletionTimestamp != nil {
			continue
		}
		l := sandbox.Listing{ID: id, Labels: map[string]string{}, Created: p.CreationTimestamp.Time}
		for k, v := range p.Annotations {
			if key, ok := strings.CutPrefix(k, "berth.run/"); ok && k != AnnotationID {
				l.Labels[key] = v
			}
		}
		out = append(out, l)
	}
	return out, nil
}

// Remove implements sandbox.Shared.
func (d *Driver) Remove(ctx context.Context, id string) error {
	name := PodName(id)
	d.mu.Lock()
	sb := d.sandboxes[name]
	d.mu.Unlock()
	if sb != nil && sb.id == id {
		return sb.Stop(ctx)
	}
	if err := d.deletePod(ctx, name, "", nil); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	if err := d.deletePolicy(ctx, name); err != nil {
		return fmt.Errorf("remove sandbox %q: %w", id, err)
	}
	return nil
}
