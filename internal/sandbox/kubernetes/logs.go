package kubernetes

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/berthrun/berth/internal/sandbox"
)

// Any replica can read any pod's log.
var _ sandbox.LogSource = (*Driver)(nil)

// Logs implements sandbox.LogSource with the agent container's log
// (pods/log), which holds stdout and stderr merged. The kubelet starts
// each line with its time (Timestamps); Since goes to the API server
// rounded down to the second, the precision of its SinceTime. A pod whose
// agent has not started yet (another replica is starting it) has no
// output yet; a follow of it waits for the agent to start.
func (d *Driver) Logs(ctx context.Context, id string, o sandbox.LogOptions) (io.ReadCloser, error) {
	opts := podLogOptions(o)
	for {
		// The pod must be this owner's sandbox id, not merely share its
		// name.
		if _, err := d.getPod(ctx, id); err != nil {
			return nil, fmt.Errorf("logs of sandbox %q: %w", id, err)
		}
		rc, err := d.client.CoreV1().Pods(d.opts.Namespace).GetLogs(PodName(id), opts).Stream(ctx)
		switch {
		case err == nil:
			return rc, nil
		case !apierrors.IsBadRequest(err) && !apierrors.IsNotFound(err):
			return nil, fmt.Errorf("logs of sandbox %q: %w", id, err)
		case !o.Follow:
			// The pod exists (it was just read): the API server answers
			// 400 to a container waiting to start, and the kubelet 404 to
			// one it has not created yet. A pod gone meanwhile is found
			// out by the next read of it.
			return io.NopCloser(strings.NewReader("")), nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("logs of sandbox %q: the agent has not started: %w", id, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// podLogOptions turns LogOptions into the pods/log request's.
func podLogOptions(o sandbox.LogOptions) *corev1.PodLogOptions {
	opts := &corev1.PodLogOptions{Container: agentContainer, Timestamps: true, Follow: o.Follow}
	if !o.Since.IsZero() {
		opts.SinceTime = &metav1.Time{Time: o.Since.UTC().Truncate(time.Second)}
	}
	if o.Tail > 0 {
		n := int64(o.Tail)
		opts.TailLines = &n
	}
	return opts
}
