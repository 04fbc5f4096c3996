package image

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// LocalRegistry is the registry name of images uploaded to Berth as
// tarballs: an image imported as "my-agent:1" is the containerUri
// "berth.local/my-agent:1" (or "berth.local/my-agent@sha256:..."). Pulls
// of such references look in the store only, never on the network.
const LocalRegistry = "berth.local"

// ErrInUse reports an image that Remove keeps because an upload's name
// still refers to it.
var ErrInUse = errors.New("image in use")

// Import reads an image tarball, either a docker-archive (docker save) or an
// OCI image layout (a tar of its directory, e.g. docker buildx --output
// type=oci), from r, adds the image for this host's platform to the store
// and names it ref, "repository[:tag]" (tag "latest" if none). The name then
// refers to the image (the containerUri LocalRegistry/ref) until it is
// imported again or Untag removes it; while it does, Remove keeps the image.
//
// The tarball may be up to twice the compressed size limit, since
// docker-archive layers are not compressed.
func (s *Store) Import(ctx context.Context, ref string, r io.Reader) (*Image, name.Tag, error) {
	tag, err := s.localTag(ref)
	if err != nil {
		return nil, name.Tag{}, err
	}
	tmp, err := os.MkdirTemp(s.dir, ".upload-")
	if err != nil {
		return nil, tag, fmt.Errorf("import image: %w", err)
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, "image.tar")
	format, err := s.saveUpload(r, archive)
	if err != nil {
		return nil, tag, err
	}
	var img v1.Image
	switch format {
	case "oci":
		dir := filepath.Join(tmp, "layout")
		if err := extractLayout(archive, dir); err != nil {
			return nil, tag, err
		}
		idx, err := layout.ImageIndexFromPath(dir)
		if err != nil {
			return nil, tag, fmt.Errorf("import image: OCI layout: %w: %w", ErrInvalid, err)
		}
		if img, err = s.findPlatform(tag.String(), idx, 0); err != nil {
			return nil, tag, err
		}
	case "docker":
		if img, err = tarball.ImageFromPath(archive, nil); err != nil {
			return nil, tag, fmt.Errorf("import image: docker archive: %w: %w (a tarball must hold one image)", ErrInvalid, err)
		}
	}
	rec, err := s.Add(ctx, tag.String(), img)
	if err != nil {
		return nil, tag, err
	}
	if err := s.setTag(tag.String(), rec.Digest); err != nil {
		return nil, tag, err
	}
	return rec, tag, nil
}

// localTag parses the name of an upload into a reference in LocalRegistry.
func (s *Store) localTag(ref string) (name.Tag, error) {
	if ref == "" || strings.Contains(ref, "@") || strings.HasPrefix(ref, LocalRegistry+"/") {
		return name.Tag{}, fmt.Errorf("image name %q: want repository[:tag], such as my-agent:1: %w", ref, ErrInvalid)
	}
	if !strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		ref += ":latest"
	}
	tag, err := name.NewTag(LocalRegistry+"/"+ref, name.StrictValidation)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image name %q: want repository[:tag] in lower case, such as my-agent:1: %w: %w", ref, ErrInvalid, err)
	}
	return tag, nil
}

// saveUpload copies an upload to file, bounded in size, and says whether it
// is an OCI layout ("oci") or a docker-archive ("docker").
func (s *Store) saveUpload(r io.Reader, file string) (string, error) {
	f, err := os.Create(file)
	if err != nil {
		return "", fmt.Errorf("import image: %w", err)
	}
	limit := 2 * s.opts.MaxCompressedBytes
	n, err := io.Copy(f, io.LimitReader(r, limit+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", fmt.Errorf("import image: read the upload: %w", err)
	}
	if n > limit {
		return "", fmt.Errorf("import image: the tarball is larger than %s, twice this server's image size limit (berth server --max-image-size): %w",
			humanBytes(limit), ErrTooLarge)
	}
	f, err = os.Open(file)
	if err != nil {
		return "", fmt.Errorf("import image: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("import image: the tarball has neither oci-layout (an OCI image layout) nor manifest.json (docker save): %w", ErrInvalid)
		}
		if err != nil {
			return "", fmt.Errorf("import image: not a tar file: %w: %w", ErrInvalid, err)
		}
		switch path.Clean(hdr.Name) {
		case "oci-layout":
			return "oci", nil
		case "manifest.json":
			return "docker", nil
		}
	}
}

// extractLayout extracts the regular files and directories of an OCI layout
// tarball into dir, which it creates. Nothing else is needed of a layout.
func extractLayout(archive, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	defer root.Close()
	f, err := os.Open(archive)
	if err != nil {
		return fmt.Errorf("import image: %w", err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("import image: %w: %w", ErrInvalid, err)
		}
		p := path.Clean("/" + hdr.Name)[1:]
		if p == "" {
			continue
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			err = root.MkdirAll(p, 0o700)
		case tar.TypeReg:
			if err = root.MkdirAll(path.Dir(p), 0o700); err != nil {
				break
			}
			var out *os.File
			if out, err = root.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600); err != nil {
				break
			}
			_, err = io.Copy(out, tr)
			if cerr := out.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			return fmt.Errorf("import image: OCI layout entry %q: %w", hdr.Name, err)
		}
	}
}

// findPlatform finds the image for the store's platform in idx, looking into
// nested indexes (docker buildx writes an index of an index).
func (s *Store) findPlatform(ref string, idx v1.ImageIndex, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, fmt.Errorf("image %s: indexes nested too deep: %w", ref, ErrInvalid)
	}
	m, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("image %s: %w", ref, err)
	}
	var have []string
	for _, d := range m.Manifests {
		switch {
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", ref, err)
			}
			img, err := s.findPlatform(ref, child, depth+1)
			if err == nil {
				return img, nil
			}
			if !errors.Is(err, ErrPlatform) {
				return nil, err
			}
			have = append(have, "an index without it")
		case d.MediaType.IsImage():
			img, err := idx.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", ref, err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				return nil, fmt.Errorf("image %s: %w", ref, err)
			}
			if cf.OS == s.opts.OS && cf.Architecture == s.opts.Architecture {
				return img, nil
			}
			if cf.OS != "unknown" {
				have = append(have, cf.OS+"/"+cf.Architecture)
			}
		}
	}
	return nil, fmt.Errorf("image %s has no variant for this host's platform %s (it has %s): build one for %s: %w",
		ref, s.Platform(), strings.Join(have, ", "), s.Platform(), ErrPlatform)
}

// tagsFile holds the names of uploaded images: name -> digest.
func (s *Store) tagsFile() string { return filepath.Join(s.dir, "tags.json") }

// readTags returns the names of uploaded images. The caller holds s.mu.
func (s *Store) readTags() (map[string]string, error) {
	tags := map[string]string{}
	data, err := os.ReadFile(s.tagsFile())
	if errors.Is(err, fs.ErrNotExist) {
		return tags, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read image names: %w", err)
	}
	if err := json.Unmarshal(data, &tags); err != nil {
		return nil, fmt.Errorf("read image names: %w", err)
	}
	return tags, nil
}

// writeTags replaces the names of uploaded images. The caller holds s.mu.
func (s *Store) writeTags(tags map[string]string) error {
	data, err := json.MarshalIndent(tags, "", "  ")
	if err != nil {
		return err
	}
	tmp := s.tagsFile() + ".tmp-" + randomHex()
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("write image names: %w", err)
	}
	if err := os.Rename(tmp, s.tagsFile()); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write image names: %w", err)
	}
	return nil
}

func (s *Store) setTag(ref, digest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tags, err := s.readTags()
	if err != nil {
		return err
	}
	tags[ref] = digest
	return s.writeTags(tags)
}

// Untag removes the name of an uploaded image ("repository[:tag]"); the
// image itself goes once no version uses it.
func (s *Store) Untag(_ context.Context, ref string) error {
	tag, err := s.localTag(ref)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	tags, err := s.readTags()
	if err != nil {
		return err
	}
	if _, ok := tags[tag.String()]; !ok {
		return fmt.Errorf("no image was uploaded as %s: %w", tag, ErrNotFound)
	}
	delete(tags, tag.String())
	return s.writeTags(tags)
}

// Lookup returns the image an uploaded name ("repository[:tag]") refers to,
// and its containerUri.
func (s *Store) Lookup(ctx context.Context, ref string) (*Image, string, error) {
	tag, err := s.localTag(ref)
	if err != nil {
		return nil, "", err
	}
	img, err := s.local(ctx, tag)
	return img, tag.String(), err
}

// local resolves a reference in LocalRegistry to an imported image.
func (s *Store) local(ctx context.Context, r name.Reference) (*Image, error) {
	if d, ok := r.(name.Digest); ok {
		return s.Get(ctx, d.DigestStr())
	}
	s.mu.Lock()
	tags, err := s.readTags()
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	digest, ok := tags[r.String()]
	if !ok {
		short := strings.TrimPrefix(r.String(), LocalRegistry+"/")
		return nil, fmt.Errorf("no image was uploaded as %s: upload it first (berth deploy --image FILE.tar, or PUT /berth/v1/images/%s): %w", r, short, ErrNotFound)
	}
	return s.Get(ctx, digest)
}

// tagged reports whether an upload's name refers to digest.
func (s *Store) tagged(digest string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	tags, err := s.readTags()
	if err != nil {
		return false, err
	}
	for _, d := range tags {
		if d == digest {
			return true, nil
		}
	}
	return false, nil
}
