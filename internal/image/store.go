// Package image pulls OCI and Docker container images and keeps them ready
// to run: each layer is unpacked once, by its diffID, into a cache of
// directories that overlayfs takes as lower layers, and shared by every image,
// version and session that uses it.
//
// A Store pulls from any registry (anonymous, or with the credentials of a
// Docker config file; plain HTTP only for registries marked insecure), picks
// the host's platform from a multi-platform index, refuses images for
// another architecture or above a compressed size, and keeps each image's
// run configuration (Entrypoint, Cmd, Env, WorkingDir, User). Images no
// caller needs any more are removed with Remove, and the layers no image
// refers to with CollectLayers.
//
// Layers are unpacked safely: no entry lands outside its layer directory
// (symlinks and ".." included); whiteouts become overlayfs whiteouts
// (character devices 0/0) and opaque directories get the
// trusted.overlay.opaque xattr; device nodes are skipped (sandboxes get
// their own /dev); setuid and setgid bits are dropped (agents run with
// no_new_privs, where they would mean nothing, and a shared cache should not
// hold setuid files); extended attributes are not kept. Owners are shifted
// by Options.IDShift, so that a sandbox whose user namespace maps its ids
// 0-65535 to IDShift and up sees the image's owners as they were built.
package image

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// DefaultMaxCompressedBytes is the largest image (the sum of its compressed
// layers and config) a Store accepts unless told otherwise: 2 GiB, as
// AgentCore.
const DefaultMaxCompressedBytes = 2 << 30

// Errors a pull can fail with, wrapped with details.
var (
	ErrNotFound     = errors.New("image not found")
	ErrUnauthorized = errors.New("access to the image refused")
	ErrPlatform     = errors.New("image is for another platform")
	ErrTooLarge     = errors.New("image too large")
	ErrInvalid      = errors.New("invalid image")
)

// Options configure a Store.
type Options struct {
	// AuthFile is a Docker config file (config.json) whose "auths" give
	// registry credentials (user and password, or tokens). Empty or missing
	// means anonymous pulls only.
	AuthFile string
	// Insecure lists the registries (host or host:port, as in image
	// references) that may be reached over plain HTTP. Every other registry
	// must use HTTPS.
	Insecure []string
	// MaxCompressedBytes bounds an image's compressed size. Zero means
	// DefaultMaxCompressedBytes.
	MaxCompressedBytes int64
	// OS and Architecture are the platform images must be built for. Empty
	// means this host's (linux and runtime.GOARCH).
	OS, Architecture string
	// MaxUnpackedBytes bounds the bytes of file contents an image's layers
	// unpack to (a defence against decompression bombs). Zero means 4 times
	// MaxCompressedBytes.
	MaxUnpackedBytes int64
	// IDShift is added to the owner uid and gid of every unpacked file (ids
	// of 65536 and more become 65534, "nobody"). See the package doc.
	IDShift uint32
	// Transport is the HTTP transport to registries; nil means
	// http.DefaultTransport.
	Transport http.RoundTripper
	// Logger receives the store's logs; nil means slog.Default().
	Logger *slog.Logger
}

// Config is how an image says to run it.
type Config struct {
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"workingDir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is a pulled image whose layers are all unpacked in the cache.
type Image struct {
	// Digest is the digest of the image's manifest (for the host's
	// platform), "sha256:...": what identifies it in the store.
	Digest string `json:"digest"`
	// Reference is what it was pulled or imported as.
	Reference    string `json:"reference"`
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       Config `json:"config"`
	// Layers are the diffIDs of its layers, the bottom one first.
	Layers []string `json:"layers"`
	// CompressedSize is the sum of its compressed layers and config.
	CompressedSize int64 `json:"compressedSize"`
	// Files holds the image's etc/passwd and etc/group when Inspect read
	// them from its layers to resolve a user name (its layers are not in
	// the cache then).
	Files map[string][]byte `json:"files,omitempty"`
}

// Store is a cache of pulled images and their unpacked layers in a
// directory. It is safe for concurrent use; two pulls needing the same layer
// unpack it once.
type Store struct {
	dir    string
	layers string // unpacked layers, by diffID hex
	images string // image records, by manifest digest hex
	opts   Options
	keys   *keychain
	rt     http.RoundTripper
	log    *slog.Logger

	// gc is held shared by pulls and exclusively by CollectLayers, so that
	// no layer is collected between its unpacking and the recording of the
	// image that needs it.
	gc sync.RWMutex

	mu       sync.Mutex
	inflight map[string]*unpacking // by diffID
}

// unpacking is one layer being unpacked; others needing it wait for done.
type unpacking struct {
	done chan struct{}
	err  error
}

// Open opens (creating if needed) the image store in dir. The directories it
// creates are searchable by others (0711), as sandboxes' roots in their own
// user namespaces must reach the layers.
func Open(dir string, opts Options) (*Store, error) {
	if opts.MaxCompressedBytes <= 0 {
		opts.MaxCompressedBytes = DefaultMaxCompressedBytes
	}
	if opts.MaxUnpackedBytes <= 0 {
		opts.MaxUnpackedBytes = 4 * opts.MaxCompressedBytes
	}
	if opts.OS == "" {
		opts.OS = "linux"
	}
	if opts.Architecture == "" {
		opts.Architecture = goruntime.GOARCH
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Transport == nil {
		opts.Transport = http.DefaultTransport
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open image store: %w", err)
	}
	// overlayfs reads lower directories from a comma and colon separated
	// option string.
	if strings.ContainsAny(abs, ",:\\\n") {
		return nil, fmt.Errorf("open image store %q: overlayfs cannot take a path with ',', ':' or '\\'", abs)
	}
	keys, err := loadKeychain(opts.AuthFile)
	if err != nil {
		return nil, err
	}
	insecure := map[string]bool{}
	for _, r := range opts.Insecure {
		if r == "" || strings.ContainsAny(r, "/ ") {
			return nil, fmt.Errorf("insecure registry %q: want host or host:port", r)
		}
		insecure[r] = true
	}
	s := &Store{dir: abs, layers: filepath.Join(abs, "layers"), images: filepath.Join(abs, "images"),
		opts: opts, keys: keys, log: opts.Logger, inflight: map[string]*unpacking{},
		rt: &httpGuard{next: opts.Transport, insecure: insecure}}
	for _, d := range []string{abs, s.layers, s.images} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	// What an earlier run left half done: layers being unpacked, uploads
	// being read, records being written.
	for _, d := range []string{abs, s.layers, s.images} {
		entries, err := os.ReadDir(d)
		if err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
		for _, e := range entries {
			n := e.Name()
			if strings.HasPrefix(n, ".tmp-") || strings.HasPrefix(n, ".upload-") || strings.Contains(n, ".tmp-") {
				if err := os.RemoveAll(filepath.Join(d, n)); err != nil {
					return nil, fmt.Errorf("open image store: remove what an earlier run left: %w", err)
				}
			}
		}
	}
	return s, nil
}

// Platform returns the platform images must be built for, as os/arch.
func (s *Store) Platform() string { return s.opts.OS + "/" + s.opts.Architecture }

// Pull fetches the image ref names (for this host's platform) from its
// registry, unpacks the layers the cache lacks and records the image. An
// image already recorded under the same digest is not fetched again, apart
// from its manifest. References in LocalRegistry name imported images and
// are looked up in the store only.
func (s *Store) Pull(ctx context.Context, ref string) (*Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	if r.Context().RegistryStr() == LocalRegistry {
		return s.local(ctx, r)
	}
	img, err := s.remoteImage(ctx, ref, r)
	if err != nil {
		return nil, err
	}
	rec, err := s.Add(ctx, ref, img)
	var terr *transport.Error
	if errors.As(err, &terr) {
		// A blob the registry would not serve.
		return nil, s.registryError(r, err)
	}
	return rec, err
}

// Inspect is Pull without the layers, for sandboxes whose nodes pull
// images themselves: it fetches the manifest (for the store's platform)
// and config of the image ref names, checks them as Pull does (platform,
// size, layer types) and records the image, but neither downloads nor
// unpacks its layers, except to read etc/passwd and etc/group (into
// Image.Files) when the image's user is a name, which only the image's
// files resolve; those are streamed from the top layer down until found.
// Images uploaded to the store (LocalRegistry) are refused: nodes cannot
// pull them.
func (s *Store) Inspect(ctx context.Context, ref string) (*Image, error) {
	r, err := s.parse(ref)
	if err != nil {
		return nil, err
	}
	if r.Context().RegistryStr() == LocalRegistry {
		return nil, fmt.Errorf("image %s was uploaded to this Berth server and is in no registry: %w", ref, ErrNotFound)
	}
	img, err := s.remoteImage(ctx, ref, r)
	if err != nil {
		return nil, err
	}
	rec, _, err := s.check(ref, img)
	if err != nil {
		return nil, err
	}
	if old, err := s.Get(ctx, rec.Digest); err == nil {
		return old, nil
	}
	if needsUserFiles(rec.Config.User) {
		if rec.Files, err = userFiles(ctx, img); err != nil {
			var terr *transport.Error
			if errors.As(err, &terr) {
				return nil, s.registryError(r, err)
			}
			return nil, fmt.Errorf("image %s: read its user %q: %w", ref, rec.Config.User, err)
		}
	}
	if err := s.write(rec); err != nil {
		return nil, err
	}
	s.log.Info("image inspected", "image", ref, "digest", rec.Digest, "layers", len(rec.Layers), "compressed_bytes", rec.CompressedSize)
	return rec, nil
}

// remoteImage fetches the manifest of r from its registry, the one for the
// store's platform if it is an index.
func (s *Store) remoteImage(ctx context.Context, ref string, r name.Reference) (v1.Image, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithAuthFromKeychain(s.keys), remote.WithTransport(s.rt)}
	desc, err := remote.Get(r, opts...)
	if err != nil {
		return nil, s.registryError(r, err)
	}
	if desc.MediaType.IsIndex() {
		idx, err := desc.ImageIndex()
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", ref, err)
		}
		return s.pickPlatform(ref, idx)
	}
	img, err := desc.Image()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, s.registryError(r, err))
	}
	return img, nil
}

// Pinned returns ref's repository with digest instead of its tag
// ("registry/repository@sha256:..."), the form in which a node pulls
// exactly the image Berth inspected. Docker Hub's repositories are written
// docker.io/..., as container runtimes normalise them.
func Pinned(ref, digest string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", fmt.Errorf("image reference %q: %w: %w", ref, ErrInvalid, err)
	}
	if _, err := v1.NewHash(digest); err != nil {
		return "", fmt.Errorf("image digest %q: %w: %w", digest, ErrInvalid, err)
	}
	reg := r.Context().RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + r.Context().RepositoryStr() + "@" + digest, nil
}

// parse parses an image reference, allowing plain HTTP to the registries
// marked insecure.
func (s *Store) parse(ref string) (name.Reference, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("image reference %q: %w: %w", ref, ErrInvalid, err)
	}
	if s.rt.(*httpGuard).insecure[r.Context().RegistryStr()] {
		r, err = name.ParseReference(ref, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("image reference %q: %w: %w", ref, ErrInvalid, err)
		}
	}
	return r, nil
}

// registryError turns what the registry answered into an error saying what
// to do about it.
func (s *Store) registryError(r name.Reference, err error) error {
	reg := r.Context().RegistryStr()
	var terr *transport.Error
	if errors.As(err, &terr) {
		switch {
		case terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden:
			where := "no credentials are configured for it"
			if _, ok := s.keys.auths[registryKey(reg)]; ok {
				where = "check its entry in " + s.opts.AuthFile
			} else if s.opts.AuthFile != "" {
				where = s.opts.AuthFile + " has no entry for it"
			}
			return fmt.Errorf("pull %s: registry %s refused access (%d): %s: %w", r, reg, terr.StatusCode, where, ErrUnauthorized)
		case terr.StatusCode == http.StatusNotFound:
			return fmt.Errorf("pull %s: registry %s has no such image or tag: %w", r, reg, ErrNotFound)
		}
		for _, d := range terr.Errors {
			switch d.Code {
			case transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode, transport.BlobUnknownErrorCode:
				return fmt.Errorf("pull %s: registry %s has no such image or tag: %w", r, reg, ErrNotFound)
			case transport.UnauthorizedErrorCode, transport.DeniedErrorCode:
				return fmt.Errorf("pull %s: registry %s refused access: %w", r, reg, ErrUnauthorized)
			}
		}
	}
	return fmt.Errorf("pull %s: %w", r, err)
}

// pickPlatform returns the image of idx built for the store's platform.
func (s *Store) pickPlatform(ref string, idx v1.ImageIndex) (v1.Image, error) {
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: read index: %w", ref, err)
	}
	var have []string
	for _, d := range m.Manifests {
		if d.Platform == nil {
			continue
		}
		p := d.Platform.OS + "/" + d.Platform.Architecture
		if d.Platform.Variant != "" {
			p += "/" + d.Platform.Variant
		}
		if d.Platform.OS == s.opts.OS && d.Platform.Architecture == s.opts.Architecture && d.MediaType.IsImage() {
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s for %s: %w", ref, p, err)
			}
			return img, nil
		}
		if p != "unknown/unknown" { // attestation manifests
			have = append(have, p)
		}
	}
	return nil, fmt.Errorf("image %s has no variant for this host's platform %s (it has %s): build or push one for %s: %w",
		ref, s.Platform(), strings.Join(have, ", "), s.Platform(), ErrPlatform)
}

// Add checks img (its platform and size), unpacks the layers the cache
// lacks and records it under ref, which is only descriptive. Pull uses it;
// so do imports of images from tarballs.
func (s *Store) Add(ctx context.Context, ref string, img v1.Image) (*Image, error) {
	rec, layers, err := s.check(ref, img)
	if err != nil {
		return nil, err
	}
	s.gc.RLock()
	defer s.gc.RUnlock()
	if old, err := s.Get(ctx, rec.Digest); err == nil && s.present(old) {
		return old, nil
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("image %s: read config: %w", ref, err)
	}
	// Layers download and unpack in parallel (each is one stream:
	// download, decompress, hash, write), a few at a time; the budget of
	// unpacked bytes is the image's, shared by its layers.
	budget := &budget{left: s.opts.MaxUnpackedBytes}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make([]error, len(layers))
	sem := make(chan struct{}, parallelLayers)
	var wg sync.WaitGroup
	for i, l := range layers {
		wg.Go(func() {
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				errs[i] = ctx.Err()
				return
			}
			defer func() { <-sem }()
			diffID := cf.RootFS.DiffIDs[i]
			if err := s.ensureLayer(ctx, diffID, l, budget); err != nil {
				errs[i] = fmt.Errorf("image %s layer %d (%s): %w", ref, i, diffID, err)
				cancel()
			}
		})
	}
	wg.Wait()
	// The first failure, not the cancellations it caused.
	for _, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			return nil, err
		}
	}
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	if err := s.write(rec); err != nil {
		return nil, err
	}
	s.log.Info("image ready", "image", ref, "digest", rec.Digest, "layers", len(rec.Layers), "compressed_bytes", rec.CompressedSize)
	return rec, nil
}

// check reads img's manifest and config, checks its size, platform and
// layers, and returns its record and layers.
func (s *Store) check(ref string, img v1.Image) (*Image, []v1.Layer, error) {
	digest, err := img.Digest()
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: read manifest: %w", ref, err)
	}
	size := m.Config.Size
	for _, l := range m.Layers {
		size += l.Size
	}
	if size > s.opts.MaxCompressedBytes {
		return nil, nil, fmt.Errorf("image %s is %s compressed, above this server's limit of %s (berth server --max-image-size): %w",
			ref, humanBytes(size), humanBytes(s.opts.MaxCompressedBytes), ErrTooLarge)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: read config: %w", ref, err)
	}
	if cf.OS != s.opts.OS || cf.Architecture != s.opts.Architecture {
		return nil, nil, fmt.Errorf("image %s is built for %s/%s, but this host runs %s: rebuild it for %s (e.g. docker buildx build --platform %s): %w",
			ref, cf.OS, cf.Architecture, s.Platform(), s.Platform(), s.Platform(), ErrPlatform)
	}
	rec := &Image{Digest: digest.String(), Reference: ref, OS: cf.OS, Architecture: cf.Architecture, CompressedSize: size,
		Config: Config{Entrypoint: cf.Config.Entrypoint, Cmd: cf.Config.Cmd, Env: cf.Config.Env,
			WorkingDir: cf.Config.WorkingDir, User: cf.Config.User}}
	layers, err := img.Layers()
	if err != nil {
		return nil, nil, fmt.Errorf("image %s: %w", ref, err)
	}
	if len(layers) != len(cf.RootFS.DiffIDs) {
		return nil, nil, fmt.Errorf("image %s: %d layers but %d diffIDs in its config: %w", ref, len(layers), len(cf.RootFS.DiffIDs), ErrInvalid)
	}
	for i, l := range layers {
		mt, err := l.MediaType()
		if err != nil {
			return nil, nil, fmt.Errorf("image %s layer %d: %w", ref, i, err)
		}
		if !mt.IsLayer() || mt == types.DockerForeignLayer {
			return nil, nil, fmt.Errorf("image %s layer %d: media type %s is not a layer Berth can unpack: %w", ref, i, mt, ErrInvalid)
		}
		diffID := cf.RootFS.DiffIDs[i]
		if diffID.Algorithm != "sha256" {
			return nil, nil, fmt.Errorf("image %s layer %d: diffID %s: only sha256 is supported: %w", ref, i, diffID, ErrInvalid)
		}
		rec.Layers = append(rec.Layers, diffID.String())
	}
	return rec, layers, nil
}

// parallelLayers is how many layers of an image are fetched and unpacked at
// once.
const parallelLayers = 3

// budget is what is left of the bytes an image may unpack to, shared by the
// goroutines unpacking its layers.
type budget struct {
	mu   sync.Mutex
	left int64
}

// take takes n bytes from b and reports whether there were enough.
func (b *budget) take(n int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left -= n
	return b.left >= 0
}

// present reports whether every layer of img is in the cache.
func (s *Store) present(img *Image) bool {
	for _, l := range img.Layers {
		if _, err := os.Stat(s.layerDir(l)); err != nil {
			return false
		}
	}
	return true
}

// ensureLayer unpacks layer l (whose diffID is diffID) into the cache unless
// it is there, once however many callers ask at the same time.
func (s *Store) ensureLayer(ctx context.Context, diffID v1.Hash, l v1.Layer, b *budget) error {
	dst := s.layerDir(diffID.String())
	for {
		if _, err := os.Stat(dst); err == nil {
			return nil
		}
		s.mu.Lock()
		u, busy := s.inflight[diffID.Hex]
		if !busy {
			u = &unpacking{done: make(chan struct{})}
			s.inflight[diffID.Hex] = u
		}
		s.mu.Unlock()
		if busy {
			select {
			case <-u.done:
				if u.err != nil {
					// The other caller's context may be what
					// failed; try again with ours.
					if ctx.Err() != nil {
						return ctx.Err()
					}
					continue
				}
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		u.err = s.unpackLayer(ctx, diffID, l, dst, b)
		s.mu.Lock()
		delete(s.inflight, diffID.Hex)
		s.mu.Unlock()
		close(u.done)
		return u.err
	}
}

// unpackLayer unpacks l into a temporary directory, checks its diffID and
// renames it to dst.
func (s *Store) unpackLayer(ctx context.Context, diffID v1.Hash, l v1.Layer, dst string, b *budget) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return fmt.Errorf("fetch: %w", err)
	}
	defer rc.Close()
	tmp := filepath.Join(s.layers, ".tmp-"+randomHex())
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("unpack: %w", err)
	}
	if err := os.Chown(tmp, int(s.opts.IDShift), int(s.opts.IDShift)); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("unpack: %w", err)
	}
	if err := unpack(ctx, tmp, rc, diffID, s.opts.IDShift, b, s.opts.MaxUnpackedBytes); err != nil {
		os.RemoveAll(tmp)
		return fmt.Errorf("unpack: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		os.RemoveAll(tmp)
		if _, serr := os.Stat(dst); serr == nil {
			return nil // another process was quicker
		}
		return fmt.Errorf("unpack: %w", err)
	}
	return nil
}

// layerDir is the cache directory of the layer whose diffID is diffID.
func (s *Store) layerDir(diffID string) string {
	return filepath.Join(s.layers, strings.TrimPrefix(diffID, "sha256:"))
}

// LayerDirs returns the directories of img's unpacked layers, the bottom
// one first, after checking they are all there.
func (s *Store) LayerDirs(img *Image) ([]string, error) {
	dirs := make([]string, len(img.Layers))
	for i, l := range img.Layers {
		dirs[i] = s.layerDir(l)
		if _, err := os.Stat(dirs[i]); err != nil {
			return nil, fmt.Errorf("image %s: layer %s is missing from the cache (pull the image again): %w", img.Reference, l, err)
		}
	}
	return dirs, nil
}

// Get returns the recorded image whose manifest digest is digest.
func (s *Store) Get(_ context.Context, digest string) (*Image, error) {
	p, err := s.recordPath(digest)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("image %s is not in the store: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("read image %s: %w", digest, err)
	}
	var img Image
	if err := json.Unmarshal(data, &img); err != nil {
		return nil, fmt.Errorf("read image %s: %w", digest, err)
	}
	return &img, nil
}

// recordPath is where the record of the image with digest lives.
func (s *Store) recordPath(digest string) (string, error) {
	h, err := v1.NewHash(digest)
	if err != nil || h.Algorithm != "sha256" {
		return "", fmt.Errorf("image digest %q: want sha256:<64 hex digits>: %w", digest, ErrInvalid)
	}
	return filepath.Join(s.images, h.Hex+".json"), nil
}

// write records img atomically.
func (s *Store) write(img *Image) error {
	p, err := s.recordPath(img.Digest)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(img, "", "  ")
	if err != nil {
		return err
	}
	tmp := p + ".tmp-" + randomHex()
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("record image %s: %w", img.Digest, err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("record image %s: %w", img.Digest, err)
	}
	return nil
}

// Digests lists the digests of every recorded image.
func (s *Store) Digests(_ context.Context) ([]string, error) {
	entries, err := os.ReadDir(s.images)
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	var out []string
	for _, e := range entries {
		if h, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			out = append(out, "sha256:"+h)
		}
	}
	return out, nil
}

// Remove forgets the image with digest, unless the name of an upload still
// refers to it (then it returns ErrInUse). Its layers stay until
// CollectLayers finds no image needs them.
func (s *Store) Remove(_ context.Context, digest string) error {
	p, err := s.recordPath(digest)
	if err != nil {
		return err
	}
	if used, err := s.tagged(digest); err != nil {
		return err
	} else if used {
		return fmt.Errorf("image %s is still the upload of a name: %w", digest, ErrInUse)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove image %s: %w", digest, err)
	}
	return nil
}

// CollectLayers removes the unpacked layers no recorded image refers to and
// returns their diffIDs. Pulls wait while it runs.
func (s *Store) CollectLayers(ctx context.Context) ([]string, error) {
	s.gc.Lock()
	defer s.gc.Unlock()
	digests, err := s.Digests(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]bool{}
	for _, d := range digests {
		img, err := s.Get(ctx, d)
		if err != nil {
			return nil, err
		}
		for _, l := range img.Layers {
			used[strings.TrimPrefix(l, "sha256:")] = true
		}
	}
	entries, err := os.ReadDir(s.layers)
	if err != nil {
		return nil, fmt.Errorf("collect layers: %w", err)
	}
	var removed []string
	for _, e := range entries {
		if used[e.Name()] || strings.HasPrefix(e.Name(), ".tmp-") {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.layers, e.Name())); err != nil {
			return removed, fmt.Errorf("collect layers: %w", err)
		}
		removed = append(removed, "sha256:"+e.Name())
	}
	slices.Sort(removed)
	if len(removed) > 0 {
		s.log.Info("removed unused image layers", "count", len(removed))
	}
	return removed, nil
}

func randomHex() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// humanBytes formats n bytes for messages.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
