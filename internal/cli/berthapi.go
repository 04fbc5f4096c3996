package cli

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	"github.com/aws/smithy-go"
)

// berthAPI calls Berth's own API (/berth/v1/...): the code store, live
// sessions, session logs and health. Everything else goes through the AWS
// SDK. Requests are signed like the SDK's, so they keep working once the
// server checks signatures.
type berthAPI struct {
	base   string
	hc     *http.Client
	creds  aws.CredentialsProvider
	region string
	signer *v4.Signer
}

func newBerthAPI(base string, creds aws.CredentialsProvider, region string) *berthAPI {
	return &berthAPI{base: base + "/berth/v1", hc: &http.Client{}, creds: creds, region: region, signer: v4.NewSigner()}
}

// CodeObject describes an uploaded code bundle.
type CodeObject struct {
	Bucket       string    `json:"bucket"`
	Key          string    `json:"key"`
	VersionID    string    `json:"versionId"`
	Size         int64     `json:"size"`
	LastModified time.Time `json:"lastModified"`
}

// SessionInfo is one live session.
type SessionInfo struct {
	RuntimeID    string    `json:"runtimeId"`
	RuntimeArn   string    `json:"runtimeArn"`
	SessionID    string    `json:"sessionId"`
	Version      string    `json:"version"`
	State        string    `json:"state"`
	CreatedAt    time.Time `json:"createdAt"`
	LastUsedAt   time.Time `json:"lastUsedAt"`
	AgeSeconds   float64   `json:"ageSeconds"`
	IdleSeconds  float64   `json:"idleSeconds"`
	Inflight     int       `json:"inflight"`
	LogDirectory string    `json:"logDirectory"`
}

// LogLine is one line an agent printed.
type LogLine struct {
	Time      time.Time `json:"time"`
	SessionID string    `json:"sessionId"`
	Stream    string    `json:"stream"`
	Level     string    `json:"level,omitempty"`
	Line      string    `json:"line"`
}

// LogQuery selects session logs.
type LogQuery struct {
	RuntimeID string
	SessionID string
	Since     string // a duration (10m) or an RFC 3339 time
	Until     string // a duration ago or an RFC 3339 time
	Level     string // debug, info, warn or error: at least this severe
	Stream    string // stdout or stderr
	Tail      int    // last N lines; 0 for all
	Follow    bool
}

// apiError is an error answer of Berth's API, in the AWS shape.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string                 { return e.Code + ": " + e.Message }
func (e *apiError) ErrorCode() string             { return e.Code }
func (e *apiError) ErrorMessage() string          { return e.Message }
func (e *apiError) ErrorFault() smithy.ErrorFault { return smithy.FaultUnknown }

// Health checks that the server answers.
func (b *berthAPI) Health(ctx context.Context) error {
	resp, err := b.do(ctx, http.MethodGet, "/health", nil, nil)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// PutCode uploads a code bundle under bucket and key.
func (b *berthAPI) PutCode(ctx context.Context, bucket, key string, zip []byte) (CodeObject, error) {
	var obj CodeObject
	return obj, b.doJSON(ctx, http.MethodPut, codePath(bucket, key), nil, zip, &obj)
}

// ImageObject describes a container image uploaded to Berth.
type ImageObject struct {
	ContainerURI   string `json:"containerUri"`
	Digest         string `json:"digest"`
	Architecture   string `json:"architecture"`
	Layers         int    `json:"layers"`
	CompressedSize int64  `json:"compressedSize"`
}

// PutImage uploads an image tarball (docker save, or a tar of an OCI
// layout) as name ("repository[:tag]").
func (b *berthAPI) PutImage(ctx context.Context, name string, tarball []byte) (ImageObject, error) {
	var obj ImageObject
	return obj, b.doJSON(ctx, http.MethodPut, imagePath(name), nil, tarball, &obj)
}

// DeleteImage drops the name of an uploaded image; the server then removes
// the images no runtime version uses.
func (b *berthAPI) DeleteImage(ctx context.Context, name string) error {
	return b.doJSON(ctx, http.MethodDelete, imagePath(name), nil, nil, nil)
}

func imagePath(name string) string {
	segs := strings.Split(name, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/images/" + strings.Join(segs, "/")
}

// StatCode describes the current bundle under bucket and key.
func (b *berthAPI) StatCode(ctx context.Context, bucket, key string) (CodeObject, error) {
	var obj CodeObject
	return obj, b.doJSON(ctx, http.MethodGet, codePath(bucket, key), nil, nil, &obj)
}

// DeleteCode deletes bucket and key; the server then removes the bundles no
// runtime version uses.
func (b *berthAPI) DeleteCode(ctx context.Context, bucket, key string) error {
	return b.doJSON(ctx, http.MethodDelete, codePath(bucket, key), nil, nil, nil)
}

// Sessions lists live sessions, of one runtime if runtimeID is not "".
func (b *berthAPI) Sessions(ctx context.Context, runtimeID string) ([]SessionInfo, error) {
	q := url.Values{}
	if runtimeID != "" {
		q.Set("runtimeId", runtimeID)
	}
	var out struct {
		Sessions []SessionInfo `json:"sessions"`
	}
	return out.Sessions, b.doJSON(ctx, http.MethodGet, "/sessions", q, nil, &out)
}

// StopSession stops one session.
func (b *berthAPI) StopSession(ctx context.Context, runtimeID, sessionID string) error {
	return b.doJSON(ctx, http.MethodDelete, "/sessions/"+url.PathEscape(runtimeID)+"/"+url.PathEscape(sessionID), nil, nil, nil)
}

// Logs calls fn with each log line q selects; with q.Follow it goes on with
// new lines until ctx is done.
func (b *berthAPI) Logs(ctx context.Context, q LogQuery, fn func(LogLine) error) error {
	v := url.Values{"runtimeId": {q.RuntimeID}}
	if q.SessionID != "" {
		v.Set("sessionId", q.SessionID)
	}
	if q.Since != "" {
		v.Set("since", q.Since)
	}
	if q.Until != "" {
		v.Set("until", q.Until)
	}
	if q.Level != "" {
		v.Set("level", q.Level)
	}
	if q.Stream != "" {
		v.Set("stream", q.Stream)
	}
	if q.Tail > 0 {
		v.Set("tail", strconv.Itoa(q.Tail))
	}
	if q.Follow {
		v.Set("follow", "true")
	}
	resp, err := b.do(ctx, http.MethodGet, "/logs", v, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	dec := json.NewDecoder(resp.Body)
	for {
		var l LogLine
		err := dec.Decode(&l)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("read logs: %w", err)
		}
		if err := fn(l); err != nil {
			return err
		}
	}
}

func codePath(bucket, key string) string {
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return "/code/" + url.PathEscape(bucket) + "/" + strings.Join(segs, "/")
}

// doJSON makes a call and decodes its JSON answer into out (if not nil).
func (b *berthAPI) doJSON(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	resp, err := b.do(ctx, method, path, q, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// do makes a signed call and returns a successful response, or the server's
// error as an *apiError.
func (b *berthAPI) do(ctx context.Context, method, path string, q url.Values, body []byte) (*http.Response, error) {
	u := b.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/zip")
	}
	sum := sha256.Sum256(body)
	payloadHash := hex.EncodeToString(sum[:])
	req.Header.Set("X-Amz-Content-Sha256", payloadHash)
	creds, err := b.creds.Retrieve(ctx)
	if err != nil {
		return nil, fmt.Errorf("credentials: %w", err)
	}
	if err := b.signer.SignHTTP(ctx, creds, req, payloadHash, "bedrock-agentcore", b.region, time.Now()); err != nil {
		return nil, fmt.Errorf("sign request: %w", err)
	}
	resp, err := b.hc.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	e := &apiError{Status: resp.StatusCode, Code: resp.Header.Get("X-Amzn-ErrorType")}
	var msg struct {
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &msg) == nil && msg.Message != "" {
		e.Message = msg.Message
	} else {
		e.Message = strings.TrimSpace(string(data))
	}
	if i := strings.IndexAny(e.Code, ":"); i >= 0 {
		e.Code = e.Code[:i]
	}
	if e.Code == "" {
		e.Code = http.StatusText(resp.StatusCode)
		if resp.StatusCode == http.StatusNotFound {
			e.Code = "ResourceNotFoundException"
		}
	}
	return nil, e
}
