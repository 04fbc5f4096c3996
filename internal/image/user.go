package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// User is whom an image's processes run as, in the image's ids.
type User struct {
	UID, GID uint32
	// Home is the user's home directory from the image's /etc/passwd, or
	// "/" when it names none.
	Home string
}

// ResolveUser works out the user an image's config names ("", "root",
// "uid", "name", "uid:gid", "name:group", ...) from the image's own
// /etc/passwd and /etc/group, as a container runtime would. Ids must be
// below 65536, the ids sandboxes map.
func (s *Store) ResolveUser(img *Image) (User, error) {
	spec := img.Config.User
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	if userPart == "" {
		userPart = "0"
	}
	passwd := s.imageFile(img, "etc/passwd")
	u := User{Home: "/"}
	if id, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(id)
		u.GID = u.UID
		// A numeric user with an entry takes its group and home.
		for _, f := range colonRecords(passwd) {
			if len(f) >= 6 && f[2] == userPart {
				if gid, err := strconv.ParseUint(f[3], 10, 32); err == nil {
					u.GID = uint32(gid)
				}
				u.Home = f[5]
				break
			}
		}
		if u.UID == 0 && u.Home == "/" {
			u.Home = "/root"
		}
	} else {
		found := false
		for _, f := range colonRecords(passwd) {
			if len(f) >= 6 && f[0] == userPart {
				uid, err1 := strconv.ParseUint(f[2], 10, 32)
				gid, err2 := strconv.ParseUint(f[3], 10, 32)
				if err1 != nil || err2 != nil {
					return User{}, fmt.Errorf("image user %q: bad /etc/passwd entry %q", spec, strings.Join(f, ":"))
				}
				u = User{UID: uint32(uid), GID: uint32(gid), Home: f[5]}
				found = true
				break
			}
		}
		if !found {
			return User{}, fmt.Errorf("image user %q: no user %q in the image's /etc/passwd: use a numeric uid or add the user", spec, userPart)
		}
	}
	if hasGroup {
		if id, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(id)
		} else {
			found := false
			for _, f := range colonRecords(s.imageFile(img, "etc/group")) {
				if len(f) >= 3 && f[0] == groupPart {
					gid, err := strconv.ParseUint(f[2], 10, 32)
					if err != nil {
						return User{}, fmt.Errorf("image user %q: bad /etc/group entry %q", spec, strings.Join(f, ":"))
					}
					u.GID, found = uint32(gid), true
					break
				}
			}
			if !found {
				return User{}, fmt.Errorf("image user %q: no group %q in the image's /etc/group: use a numeric gid or add the group", spec, groupPart)
			}
		}
	}
	if u.UID > maxID || u.GID > maxID {
		return User{}, fmt.Errorf("image user %q is %d:%d: Berth runs images with ids 0 to %d only", spec, u.UID, u.GID, maxID)
	}
	if u.Home == "" {
		u.Home = "/"
	}
	return u, nil
}

// imageFile returns the content of the regular file at name (relative) in
// the image's top-most layer that has it, or nil.
func (s *Store) imageFile(img *Image, name string) []byte {
	if img.Files != nil {
		return img.Files[name]
	}
	for i := len(img.Layers) - 1; i >= 0; i-- {
		p := filepath.Join(s.layerDir(img.Layers[i]), name)
		fi, err := os.Lstat(p)
		if err != nil {
			continue
		}
		if !fi.Mode().IsRegular() {
			return nil // a whiteout, a symlink or something odd
		}
		data, err := os.ReadFile(p)
		if err != nil || len(data) > 4<<20 {
			return nil
		}
		return data
	}
	return nil
}

// userFileNames are the files that resolve an image's user.
var userFileNames = []string{"etc/passwd", "etc/group"}

// needsUserFiles reports whether the image user spec names a user or group
// (rather than numeric ids), which only the image's files resolve.
func needsUserFiles(spec string) bool {
	for part := range strings.SplitSeq(spec, ":") {
		if _, err := strconv.ParseUint(part, 10, 32); part != "" && err != nil {
			return true
		}
	}
	return false
}

// userFiles reads etc/passwd and etc/group from img's layers without
// unpacking them: it streams the layers from the top one down and stops as
// soon as it knows both files (found, or deleted by a whiteout or an
// opaque etc directory). The map has an entry for each file, nil if the
// image has none.
func userFiles(ctx context.Context, img v1.Image) (map[string][]byte, error) {
	layers, err := img.Layers()
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for i := len(layers) - 1; i >= 0 && len(files) < len(userFileNames); i-- {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := layerUserFiles(layers[i], files); err != nil {
			return nil, fmt.Errorf("layer %d: %w", i, err)
		}
	}
	for _, n := range userFileNames {
		if _, ok := files[n]; !ok {
			files[n] = nil
		}
	}
	return files, nil
}

// layerUserFiles adds to files what layer l says of the user files files
// does not have yet.
func layerUserFiles(l v1.Layer, files map[string][]byte) error {
	rc, err := l.Uncompressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	seen := map[string][]byte{} // what this layer says, applied at its end
	opaque := false
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		p := strings.TrimPrefix(path.Clean("/"+hdr.Name), "/")
		switch {
		case p == ".wh.etc":
			for _, n := range userFileNames {
				seen[n] = nil
			}
		case p == "etc/.wh..wh..opq":
			opaque = true
		case strings.HasPrefix(p, "etc/.wh."):
			if n := "etc/" + strings.TrimPrefix(p, "etc/.wh."); slices.Contains(userFileNames, n) {
				seen[n] = nil
			}
		case slices.Contains(userFileNames, p):
			if hdr.Typeflag != tar.TypeReg || hdr.Size > 4<<20 {
				seen[p] = nil // a symlink or something odd, as imageFile
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			seen[p] = data
		}
	}
	for _, n := range userFileNames {
		if _, done := files[n]; done {
			continue
		}
		if data, ok := seen[n]; ok {
			files[n] = data
		} else if opaque {
			files[n] = nil // the layers below are hidden
		}
	}
	return nil
}

// colonRecords splits /etc/passwd or /etc/group content into fields.
func colonRecords(data []byte) [][]string {
	var out [][]string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		out = append(out, strings.Split(line, ":"))
	}
	return out
}
