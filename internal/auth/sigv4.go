package auth

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/aws/smithy-go/encoding/httpbinding"
)

// Service is the SigV4 signing name of both AgentCore planes.
const Service = "bedrock-agentcore"

const (
	algorithm = "AWS4-HMAC-SHA256"
	amzDate   = "20060102T150405Z"
	// MaxSkew is how far a request's signing time may be from the
	// server's clock.
	MaxSkew = 5 * time.Minute
	// memBody is the size up to which a body is hashed in memory; larger
	// ones are spooled to a temporary file, so memory stays flat.
	memBody = 1 << 20
)

// ErrUnauthenticated is the error of every failed verification. Its text
// never says which part failed, so a caller learns nothing from it.
var ErrUnauthenticated = errors.New("the request signature or its credentials are not valid")

// Verifier checks SigV4 signatures against a key file.
type Verifier struct {
	Keys *Keys
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// TempDir holds spooled bodies; "" means os.TempDir().
	TempDir string
}

// credential is the parsed Authorization header.
type credential struct {
	keyID, date, region, service string
	signedHeaders                []string
	signature                    string
}

func parseAuthorization(h string) (credential, error) {
	var c credential
	rest, ok := strings.CutPrefix(h, algorithm+" ")
	if !ok {
		return c, errors.New("not " + algorithm)
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return c, errors.New("malformed authorization")
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" || f[0] == "" {
				return c, errors.New("malformed credential")
			}
			c.keyID, c.date, c.region, c.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			c.signedHeaders = strings.Split(v, ";")
		case "Signature":
			c.signature = v
		}
	}
	if c.keyID == "" || len(c.signedHeaders) == 0 || c.signature == "" || !slices.Contains(c.signedHeaders, "host") {
		return c, errors.New("incomplete authorization")
	}
	return c, nil
}

// Verify authenticates r and returns its key. It reads the body to hash it
// and puts an equivalent body back on r; the caller must call the returned
// cleanup once done with r.
func (v *Verifier) Verify(r *http.Request) (Key, func(), error) {
	nop := func() {}
	if r.Header.Get("Authorization") == "" && r.URL.Query().Has("X-Amz-Signature") {
		key, err := v.verifyPresigned(r)
		return key, nop, err
	}
	c, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return Key{}, nop, fmt.Errorf("%w (%v)", ErrUnauthenticated, err)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	t, err := time.Parse(amzDate, r.Header.Get("X-Amz-Date"))
	if err != nil || c.service != Service || c.date != t.Format("20060102") {
		return Key{}, nop, fmt.Errorf("%w (date or scope)", ErrUnauthenticated)
	}
	if d := now().Sub(t); d > MaxSkew || d < -MaxSkew {
		return Key{}, nop, fmt.Errorf("%w (signed %s, off by %s)", ErrUnauthenticated, t.Format(amzDate), d.Round(time.Second))
	}
	key, err := v.Keys.Lookup(c.keyID)
	if err != nil {
		return Key{}, nop, fmt.Errorf("%w (key %s: %v)", ErrUnauthenticated, c.keyID, err)
	}
	payload, cleanup, err := v.hashBody(r)
	if err != nil {
		return Key{}, nop, err
	}
	if claimed := r.Header.Get("X-Amz-Content-Sha256"); claimed != "" && claimed != payload {
		cleanup()
		return Key{}, nop, fmt.Errorf("%w (payload hash)", ErrUnauthenticated)
	}
	want := signature(key.Secret, c, canonicalRequest(r, r.URL.Query(), c.signedHeaders, payload), t)
	if !hmac.Equal([]byte(want), []byte(c.signature)) {
		cleanup()
		return Key{}, nop, fmt.Errorf("%w (signature)", ErrUnauthenticated)
	}
	return key, cleanup, nil
}

// MaxPresignExpiry bounds how long a presigned URL may be valid.
const MaxPresignExpiry = time.Hour

// verifyPresigned authenticates a presigned URL (query authentication, as
// the SDKs' WebSocket helpers use for upgrade requests): a GET whose
// signature covers its query, valid for X-Amz-Expires seconds.
func (v *Verifier) verifyPresigned(r *http.Request) (Key, error) {
	q := r.URL.Query()
	if r.Method != http.MethodGet || q.Get("X-Amz-Algorithm") != algorithm {
		return Key{}, fmt.Errorf("%w (presigned: method or algorithm)", ErrUnauthenticated)
	}
	c, err := parseAuthorization(algorithm + " Credential=" + q.Get("X-Amz-Credential") +
		", SignedHeaders=" + q.Get("X-Amz-SignedHeaders") + ", Signature=" + q.Get("X-Amz-Signature"))
	if err != nil {
		return Key{}, fmt.Errorf("%w (presigned: %v)", ErrUnauthenticated, err)
	}
	t, err := time.Parse(amzDate, q.Get("X-Amz-Date"))
	if err != nil || c.service != Service || c.date != t.Format("20060102") {
		return Key{}, fmt.Errorf("%w (presigned: date or scope)", ErrUnauthenticated)
	}
	secs, err := strconv.Atoi(q.Get("X-Amz-Expires"))
	expires := time.Duration(secs) * time.Second
	if err != nil || secs < 1 || expires > MaxPresignExpiry {
		return Key{}, fmt.Errorf("%w (presigned: expiry)", ErrUnauthenticated)
	}
	now := time.Now
	if v.Now != nil {
		now = v.Now
	}
	if n := now(); n.Before(t.Add(-MaxSkew)) || n.After(t.Add(expires)) {
		return Key{}, fmt.Errorf("%w (presigned URL expired or not yet valid)", ErrUnauthenticated)
	}
	key, err := v.Keys.Lookup(c.keyID)
	if err != nil {
		return Key{}, fmt.Errorf("%w (key %s: %v)", ErrUnauthenticated, c.keyID, err)
	}
	q.Del("X-Amz-Signature")
	want := signature(key.Secret, c, canonicalRequest(r, q, c.signedHeaders, "UNSIGNED-PAYLOAD"), t)
	if !hmac.Equal([]byte(want), []byte(c.signature)) {
		return Key{}, fmt.Errorf("%w (presigned signature)", ErrUnauthenticated)
	}
	return key, nil
}

// hashBody hashes r's body and replaces it with a copy: in memory when
// small, in a temporary file otherwise.
func (v *Verifier) hashBody(r *http.Request) (string, func(), error) {
	h := sha256.New()
	if r.Body == nil || r.Body == http.NoBody {
		return hex.EncodeToString(h.Sum(nil)), func() {}, nil
	}
	head, err := io.ReadAll(io.LimitReader(r.Body, memBody+1))
	if err != nil {
		return "", nil, fmt.Errorf("read body: %w", err)
	}
	h.Write(head)
	if len(head) <= memBody {
		r.Body = io.NopCloser(bytes.NewReader(head))
		return hex.EncodeToString(h.Sum(nil)), func() {}, nil
	}
	f, err := os.CreateTemp(v.TempDir, "berth-body-")
	if err != nil {
		return "", nil, fmt.Errorf("spool body: %w", err)
	}
	cleanup := func() { f.Close(); os.Remove(f.Name()) }
	if _, err := f.Write(head); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("spool body: %w", err)
	}
	if _, err := io.Copy(io.MultiWriter(f, h), r.Body); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("spool body: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		cleanup()
		return "", nil, fmt.Errorf("spool body: %w", err)
	}
	r.Body = io.NopCloser(f)
	return hex.EncodeToString(h.Sum(nil)), cleanup, nil
}

// canonicalRequest builds SigV4's canonical request from exactly the headers
// the client signed. The path is encoded once more (the rule for every
// service but S3).
func canonicalRequest(r *http.Request, query url.Values, signed []string, payload string) string {
	var b strings.Builder
	b.WriteString(r.Method + "\n")
	b.WriteString(httpbinding.EscapePath(r.URL.EscapedPath(), false) + "\n")
	b.WriteString(canonicalQuery(query) + "\n")
	for _, name := range signed {
		var vals []string
		switch name {
		case "host":
			vals = []string{r.Host}
		case "content-length":
			vals = []string{fmt.Sprint(r.ContentLength)}
			if h := r.Header.Values("Content-Length"); len(h) > 0 {
				vals = h
			}
		default:
			vals = r.Header.Values(name)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		b.WriteString(name + ":" + strings.Join(vals, ",") + "\n")
	}
	b.WriteString("\n" + strings.Join(signed, ";") + "\n" + payload)
	return b.String()
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		vals := slices.Clone(q[k])
		slices.Sort(vals)
		for _, v := range vals {
			parts = append(parts, escape(k)+"="+escape(v))
		}
	}
	return strings.Join(parts, "&")
}

// escape percent-encodes everything but SigV4's unreserved characters.
func escape(s string) string {
	return strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
}

func signature(secret string, c credential, canonical string, t time.Time) string {
	sum := sha256.Sum256([]byte(canonical))
	scope := strings.Join([]string{c.date, c.region, c.service, "aws4_request"}, "/")
	toSign := algorithm + "\n" + t.Format(amzDate) + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+secret), c.date)
	k = hmacSHA256(k, c.region)
	k = hmacSHA256(k, c.service)
	k = hmacSHA256(k, "aws4_request")
	return hex.EncodeToString(hmacSHA256(k, toSign))
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}
