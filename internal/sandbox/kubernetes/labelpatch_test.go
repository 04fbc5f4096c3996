package kubernetes

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestLabelPatch(t *testing.T) {
	long := strings.Repeat("s", 70)
	for _, tt := range []struct {
		name        string
		uid         string
		labels      map[string]string
		wantLabels  map[string]any
		wantAnnots  map[string]any
		wantUID     string
		wantErrText string
	}{
		{name: "session", uid: "u-1", labels: map[string]string{"session": "sess-1"},
			wantLabels: map[string]any{"berth.run/session": "sess-1"}, wantAnnots: map[string]any{"berth.run/session": "sess-1"}, wantUID: "u-1"},
		{name: "value too long for a label", labels: map[string]string{"session": long},
			wantLabels: map[string]any{"berth.run/session": nil}, wantAnnots: map[string]any{"berth.run/session": long}},
		{name: "value not label-safe", labels: map[string]string{"session": "a b"},
			wantLabels: map[string]any{"berth.run/session": nil}, wantAnnots: map[string]any{"berth.run/session": "a b"}},
		{name: "bad key", labels: map[string]string{"Session": "x"}, wantErrText: `label "Session"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			data, err := labelPatch(types.UID(tt.uid), tt.labels)
			if tt.wantErrText != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrText) {
					t.Fatalf("labelPatch = %v, want an error naming %s", err, tt.wantErrText)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				Metadata struct {
					Labels, Annotations map[string]any
					UID                 string
				}
			}
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			md := got.Metadata
			if !maps.Equal(md.Labels, tt.wantLabels) || !maps.Equal(md.Annotations, tt.wantAnnots) || md.UID != tt.wantUID {
				t.Errorf("patch %s, want labels %v, annotations %v, uid %q", data, tt.wantLabels, tt.wantAnnots, tt.wantUID)
			}
			if !strings.Contains(string(data), `"uid"`) && tt.wantUID != "" {
				t.Errorf("patch %s names no uid", data)
			}
		})
	}
}
