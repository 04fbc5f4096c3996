package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/berthrun/berth/internal/control"
)

// Wire shapes of the AgentCore control plane (bedrock-agentcore-control).
// Member names are the Smithy member names exactly.

type artifactWire struct {
	ContainerConfiguration *containerWire `json:"containerConfiguration,omitempty"`
	CodeConfiguration      *codeWire      `json:"codeConfiguration,omitempty"`
}

type containerWire struct {
	ContainerURI string `json:"containerUri"`
}

type codeWire struct {
	Code       codeLocationWire `json:"code"`
	Runtime    string           `json:"runtime"`
	EntryPoint []string         `json:"entryPoint"`
}

type codeLocationWire struct {
	S3 *s3Wire `json:"s3,omitempty"`
}

type s3Wire struct {
	Bucket    string `json:"bucket"`
	Prefix    string `json:"prefix"`
	VersionID string `json:"versionId,omitempty"`
}

type networkWire struct {
	NetworkMode       string             `json:"networkMode"`
	NetworkModeConfig *networkModeConfig `json:"networkModeConfig,omitempty"`
}

type networkModeConfig struct {
	SecurityGroups []string `json:"securityGroups"`
	Subnets        []string `json:"subnets"`
}

type protocolWire struct {
	ServerProtocol string `json:"serverProtocol"`
	Port           int    `json:"port,omitempty"`
	Path           string `json:"path,omitempty"`
}

type lifecycleWire struct {
	IdleRuntimeSessionTimeout int `json:"idleRuntimeSessionTimeout,omitempty"`
	MaxLifetime               int `json:"maxLifetime,omitempty"`
}

type headerConfigWire struct {
	RequestHeaderAllowlist []string `json:"requestHeaderAllowlist"`
}

// runtimeConfigWire is what CreateAgentRuntime and UpdateAgentRuntime share.
type runtimeConfigWire struct {
	AgentRuntimeArtifact       *artifactWire     `json:"agentRuntimeArtifact"`
	RoleArn                    string            `json:"roleArn"`
	NetworkConfiguration       *networkWire      `json:"networkConfiguration,omitempty"`
	Description                string            `json:"description,omitempty"`
	RequestHeaderConfiguration *headerConfigWire `json:"requestHeaderConfiguration,omitempty"`
	ProtocolConfiguration      *protocolWire     `json:"protocolConfiguration,omitempty"`
	LifecycleConfiguration     *lifecycleWire    `json:"lifecycleConfiguration,omitempty"`
	EnvironmentVariables       map[string]string `json:"environmentVariables,omitempty"`
	// Members stored and returned as they are.
	AuthorizerConfiguration       json.RawMessage `json:"authorizerConfiguration,omitempty"`
	FilesystemConfigurations      json.RawMessage `json:"filesystemConfigurations,omitempty"`
	CapacityProviderConfiguration json.RawMessage `json:"capacityProviderConfiguration,omitempty"`
	MetadataConfiguration         json.RawMessage `json:"metadataConfiguration,omitempty"`
	AllowedPorts                  json.RawMessage `json:"allowedPorts,omitempty"`
	PlatformVersion               json.RawMessage `json:"platformVersion,omitempty"`
}

// extraMembers are the members of runtimeConfigWire kept in Config.Extra.
func (c *runtimeConfigWire) extraMembers() map[string]*json.RawMessage {
	return map[string]*json.RawMessage{
		"authorizerConfiguration":       &c.AuthorizerConfiguration,
		"filesystemConfigurations":      &c.FilesystemConfigurations,
		"capacityProviderConfiguration": &c.CapacityProviderConfiguration,
		"metadataConfiguration":         &c.MetadataConfiguration,
		"allowedPorts":                  &c.AllowedPorts,
		"platformVersion":               &c.PlatformVersion,
	}
}

func (c *runtimeConfigWire) toConfig() control.Config {
	out := control.Config{Description: c.Description, RoleARN: c.RoleArn, Env: c.EnvironmentVariables}
	if a := c.AgentRuntimeArtifact; a != nil {
		if a.ContainerConfiguration != nil {
			out.Container = &control.ContainerArtifact{URI: a.ContainerConfiguration.ContainerURI}
		}
		if cc := a.CodeConfiguration; cc != nil {
			out.Code = &control.CodeArtifact{Runtime: cc.Runtime, EntryPoint: cc.EntryPoint}
			if s3 := cc.Code.S3; s3 != nil {
				out.Code.Bucket, out.Code.Key, out.Code.VersionID = s3.Bucket, s3.Prefix, s3.VersionID
			}
		}
	}
	if n := c.NetworkConfiguration; n != nil {
		out.Network.Mode = n.NetworkMode
		if n.NetworkModeConfig != nil {
			out.Network.SecurityGroups, out.Network.Subnets = n.NetworkModeConfig.SecurityGroups, n.NetworkModeConfig.Subnets
		}
	}
	if p := c.ProtocolConfiguration; p != nil {
		out.Protocol = control.Protocol{Server: p.ServerProtocol, Port: p.Port, Path: p.Path}
	}
	if l := c.LifecycleConfiguration; l != nil {
		out.Lifecycle = control.Lifecycle{IdleTimeout: l.IdleRuntimeSessionTimeout, MaxLifetime: l.MaxLifetime}
	}
	if h := c.RequestHeaderConfiguration; h != nil {
		out.HeaderAllowlist = h.RequestHeaderAllowlist
	}
	for name, raw := range c.extraMembers() {
		if len(*raw) > 0 && string(*raw) != "null" {
			if out.Extra == nil {
				out.Extra = map[string]json.RawMessage{}
			}
			out.Extra[name] = *raw
		}
	}
	return out
}

func fromConfig(c control.Config) runtimeConfigWire {
	out := runtimeConfigWire{Description: c.Description, RoleArn: c.RoleARN, EnvironmentVariables: c.Env,
		NetworkConfiguration:   &networkWire{NetworkMode: c.Network.Mode},
		ProtocolConfiguration:  &protocolWire{ServerProtocol: c.Protocol.Server, Port: c.Protocol.Port, Path: c.Protocol.Path},
		LifecycleConfiguration: &lifecycleWire{IdleRuntimeSessionTimeout: c.Lifecycle.IdleTimeout, MaxLifetime: c.Lifecycle.MaxLifetime},
	}
	if c.Network.Mode == "VPC" {
		out.NetworkConfiguration.NetworkModeConfig = &networkModeConfig{SecurityGroups: c.Network.SecurityGroups, Subnets: c.Network.Subnets}
	}
	switch {
	case c.Code != nil:
		out.AgentRuntimeArtifact = &artifactWire{CodeConfiguration: &codeWire{
			Code:    codeLocationWire{S3: &s3Wire{Bucket: c.Code.Bucket, Prefix: c.Code.Key, VersionID: c.Code.VersionID}},
			Runtime: c.Code.Runtime, EntryPoint: c.Code.EntryPoint}}
	case c.Container != nil:
		out.AgentRuntimeArtifact = &artifactWire{ContainerConfiguration: &containerWire{ContainerURI: c.Container.URI}}
	}
	if len(c.HeaderAllowlist) > 0 {
		out.RequestHeaderConfiguration = &headerConfigWire{RequestHeaderAllowlist: c.HeaderAllowlist}
	}
	for name, raw := range out.extraMembers() {
		*raw = c.Extra[name]
	}
	return out
}

type createRuntimeRequest struct {
	AgentRuntimeName string            `json:"agentRuntimeName"`
	ClientToken      string            `json:"clientToken,omitempty"`
	Tags             map[string]string `json:"tags,omitempty"`
	runtimeConfigWire
}

type updateRuntimeRequest struct {
	ClientToken string `json:"clientToken,omitempty"`
	runtimeConfigWire
}

type workloadIdentity struct {
	WorkloadIdentityArn string `json:"workloadIdentityArn"`
}

// runtimeWriteResponse answers CreateAgentRuntime and UpdateAgentRuntime.
type runtimeWriteResponse struct {
	AgentRuntimeArn         string            `json:"agentRuntimeArn"`
	AgentRuntimeID          string            `json:"agentRuntimeId"`
	AgentRuntimeVersion     string            `json:"agentRuntimeVersion"`
	CreatedAt               time.Time         `json:"createdAt"`
	LastUpdatedAt           *time.Time        `json:"lastUpdatedAt,omitempty"`
	Status                  string            `json:"status"`
	WorkloadIdentityDetails *workloadIdentity `json:"workloadIdentityDetails"`
}

// runtimeResponse answers GetAgentRuntime.
type runtimeResponse struct {
	AgentRuntimeArn         string            `json:"agentRuntimeArn"`
	AgentRuntimeName        string            `json:"agentRuntimeName"`
	AgentRuntimeID          string            `json:"agentRuntimeId"`
	AgentRuntimeVersion     string            `json:"agentRuntimeVersion"`
	CreatedAt               time.Time         `json:"createdAt"`
	LastUpdatedAt           time.Time         `json:"lastUpdatedAt"`
	Status                  string            `json:"status"`
	FailureReason           string            `json:"failureReason,omitempty"`
	WorkloadIdentityDetails *workloadIdentity `json:"workloadIdentityDetails"`
	runtimeConfigWire
}

// runtimeSummary is one entry of ListAgentRuntimes and ListAgentRuntimeVersions.
type runtimeSummary struct {
	AgentRuntimeArn     string    `json:"agentRuntimeArn"`
	AgentRuntimeID      string    `json:"agentRuntimeId"`
	AgentRuntimeVersion string    `json:"agentRuntimeVersion"`
	AgentRuntimeName    string    `json:"agentRuntimeName"`
	Description         string    `json:"description"`
	LastUpdatedAt       time.Time `json:"lastUpdatedAt"`
	Status              string    `json:"status"`
}

type listRuntimesResponse struct {
	AgentRuntimes []runtimeSummary `json:"agentRuntimes"`
	NextToken     string           `json:"nextToken,omitempty"`
}

type deleteRuntimeResponse struct {
	Status              string `json:"status"`
	AgentRuntimeID      string `json:"agentRuntimeId"`
	AgentRuntimeVersion string `json:"agentRuntimeVersion,omitempty"`
}

type createEndpointRequest struct {
	Name                string            `json:"name"`
	AgentRuntimeVersion string            `json:"agentRuntimeVersion,omitempty"`
	Description         string            `json:"description,omitempty"`
	ClientToken         string            `json:"clientToken,omitempty"`
	Tags                map[string]string `json:"tags,omitempty"`
}

type updateEndpointRequest struct {
	AgentRuntimeVersion string  `json:"agentRuntimeVersion,omitempty"`
	Description         *string `json:"description,omitempty"`
	ClientToken         string  `json:"clientToken,omitempty"`
}

// endpointResponse answers every endpoint operation; each operation's
// output is a subset of these members.
type endpointResponse struct {
	Name                    string    `json:"name,omitempty"`
	EndpointName            string    `json:"endpointName,omitempty"`
	ID                      string    `json:"id,omitempty"`
	AgentRuntimeID          string    `json:"agentRuntimeId,omitempty"`
	LiveVersion             string    `json:"liveVersion,omitempty"`
	TargetVersion           string    `json:"targetVersion,omitempty"`
	AgentRuntimeEndpointArn string    `json:"agentRuntimeEndpointArn"`
	AgentRuntimeArn         string    `json:"agentRuntimeArn"`
	Description             string    `json:"description,omitempty"`
	Status                  string    `json:"status"`
	FailureReason           string    `json:"failureReason,omitempty"`
	CreatedAt               time.Time `json:"createdAt"`
	LastUpdatedAt           time.Time `json:"lastUpdatedAt"`
}

type listEndpointsResponse struct {
	RuntimeEndpoints []endpointResponse `json:"runtimeEndpoints"`
	NextToken        string             `json:"nextToken,omitempty"`
}

type deleteEndpointResponse struct {
	Status         string `json:"status"`
	AgentRuntimeID string `json:"agentRuntimeId"`
	EndpointName   string `json:"endpointName"`
}

func (s *Server) workloadIdentity(name string) *workloadIdentity {
	return &workloadIdentity{WorkloadIdentityArn: fmt.Sprintf("arn:aws:bedrock-agentcore:%s:%s:workload-identity-directory/default/workload-identity/%s",
		s.control.Region(), s.control.AccountID(), name)}
}

func versionString(v int) string {
	if v == 0 {
		return ""
	}
	return strconv.Itoa(v)
}

func endpointView(e control.Endpoint) endpointResponse {
	return endpointResponse{Name: e.Name, ID: e.ID, LiveVersion: versionString(e.LiveVersion), TargetVersion: versionString(e.TargetVersion),
		AgentRuntimeEndpointArn: e.ARN, AgentRuntimeArn: e.RuntimeARN, Description: e.Description, Status: e.Status,
		FailureReason: e.FailureReason, CreatedAt: e.CreatedAt, LastUpdatedAt: e.UpdatedAt}
}

// Handlers. Each returns the status and body of a success, or an error.

func (s *Server) createRuntime(r *http.Request) (int, any, error) {
	var req createRuntimeRequest
	if err := decodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	if req.AgentRuntimeName == "" {
		return 0, nil, validationError("agentRuntimeName", "is required")
	}
	rt, err := s.control.CreateRuntime(r.Context(), req.AgentRuntimeName, req.toConfig(), req.ClientToken)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, runtimeWriteResponse{AgentRuntimeArn: rt.ARN, AgentRuntimeID: rt.ID,
		AgentRuntimeVersion: versionString(rt.Version), CreatedAt: rt.CreatedAt, Status: rt.Status,
		WorkloadIdentityDetails: s.workloadIdentity(rt.Name)}, nil
}

func (s *Server) updateRuntime(r *http.Request, id string) (int, any, error) {
	var req updateRuntimeRequest
	if err := decodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	rt, err := s.control.UpdateRuntime(r.Context(), id, req.toConfig(), req.ClientToken)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, runtimeWriteResponse{AgentRuntimeArn: rt.ARN, AgentRuntimeID: rt.ID,
		AgentRuntimeVersion: versionString(rt.Version), CreatedAt: rt.CreatedAt, LastUpdatedAt: &rt.UpdatedAt,
		Status: rt.Status, WorkloadIdentityDetails: s.workloadIdentity(rt.Name)}, nil
}

func (s *Server) getRuntime(r *http.Request, id string) (int, any, error) {
	version, err := versionParam(r, "version")
	if err != nil {
		return 0, nil, err
	}
	rt, err := s.control.GetRuntime(r.Context(), id, version)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, runtimeResponse{AgentRuntimeArn: rt.ARN, AgentRuntimeName: rt.Name, AgentRuntimeID: rt.ID,
		AgentRuntimeVersion: versionString(rt.Version), CreatedAt: rt.CreatedAt, LastUpdatedAt: rt.UpdatedAt,
		Status: rt.Status, FailureReason: rt.FailureReason, WorkloadIdentityDetails: s.workloadIdentity(rt.Name),
		runtimeConfigWire: fromConfig(rt.Config)}, nil
}

func (s *Server) deleteRuntime(r *http.Request, id string) (int, any, error) {
	version, err := versionParam(r, "version")
	if err != nil {
		return 0, nil, err
	}
	if err := s.control.DeleteRuntime(r.Context(), id, version); err != nil {
		return 0, nil, err
	}
	if version == 0 {
		if err := s.sessions.StopRuntime(r.Context(), id); err != nil {
			s.log.Warn("stop the sessions of a deleted runtime", "runtime", id, "err", err)
		}
		// Its sessions' logs go with it (id is a real runtime's ID, so a
		// plain path element).
		if err := os.RemoveAll(filepath.Join(s.opts.LogDir, id)); err != nil {
			s.log.Warn("remove the logs of a deleted runtime", "runtime", id, "err", err)
		}
	}
	if _, err := s.control.CollectArtifacts(r.Context()); err != nil {
		s.log.Warn("collect unused code bundles", "err", err)
	}
	return http.StatusAccepted, deleteRuntimeResponse{Status: control.StatusDeleting, AgentRuntimeID: id,
		AgentRuntimeVersion: versionString(version)}, nil
}

func summary(rt control.Runtime) runtimeSummary {
	return runtimeSummary{AgentRuntimeArn: rt.ARN, AgentRuntimeID: rt.ID, AgentRuntimeVersion: versionString(rt.Version),
		AgentRuntimeName: rt.Name, Description: rt.Config.Description, LastUpdatedAt: rt.UpdatedAt, Status: rt.Status}
}

func (s *Server) listRuntimes(r *http.Request) (int, any, error) {
	max, token, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	rts, next, err := s.control.ListRuntimes(r.Context(), token, max)
	if err != nil {
		return 0, nil, err
	}
	out := listRuntimesResponse{AgentRuntimes: []runtimeSummary{}, NextToken: next}
	for _, rt := range rts {
		out.AgentRuntimes = append(out.AgentRuntimes, summary(rt))
	}
	return http.StatusOK, out, nil
}

func (s *Server) listVersions(r *http.Request, id string) (int, any, error) {
	max, token, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	rts, next, err := s.control.ListVersions(r.Context(), id, token, max)
	if err != nil {
		return 0, nil, err
	}
	out := listRuntimesResponse{AgentRuntimes: []runtimeSummary{}, NextToken: next}
	for _, rt := range rts {
		out.AgentRuntimes = append(out.AgentRuntimes, summary(rt))
	}
	return http.StatusOK, out, nil
}

func (s *Server) createEndpoint(r *http.Request, id string) (int, any, error) {
	var req createEndpointRequest
	if err := decodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	version, err := parseVersion("agentRuntimeVersion", req.AgentRuntimeVersion)
	if err != nil {
		return 0, nil, err
	}
	e, err := s.control.CreateEndpoint(r.Context(), id, req.Name, version, req.Description, req.ClientToken)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, endpointResponse{TargetVersion: versionString(e.TargetVersion),
		AgentRuntimeEndpointArn: e.ARN, AgentRuntimeArn: e.RuntimeARN, AgentRuntimeID: e.RuntimeID,
		EndpointName: e.Name, Status: e.Status, CreatedAt: e.CreatedAt, LastUpdatedAt: e.UpdatedAt}, nil
}

func (s *Server) getEndpoint(r *http.Request, id, name string) (int, any, error) {
	e, err := s.control.GetEndpoint(r.Context(), id, name)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, endpointView(e), nil
}

func (s *Server) updateEndpoint(r *http.Request, id, name string) (int, any, error) {
	var req updateEndpointRequest
	if err := decodeJSON(r, &req); err != nil {
		return 0, nil, err
	}
	version, err := parseVersion("agentRuntimeVersion", req.AgentRuntimeVersion)
	if err != nil {
		return 0, nil, err
	}
	e, err := s.control.UpdateEndpoint(r.Context(), id, name, version, req.Description, req.ClientToken)
	if err != nil {
		return 0, nil, err
	}
	v := endpointView(e)
	v.Name, v.ID, v.Description, v.FailureReason = "", "", "", ""
	return http.StatusAccepted, v, nil
}

func (s *Server) deleteEndpoint(r *http.Request, id, name string) (int, any, error) {
	if err := s.control.DeleteEndpoint(r.Context(), id, name); err != nil {
		return 0, nil, err
	}
	return http.StatusAccepted, deleteEndpointResponse{Status: control.StatusDeleting, AgentRuntimeID: id, EndpointName: name}, nil
}

func (s *Server) listEndpoints(r *http.Request, id string) (int, any, error) {
	max, token, err := pageParams(r)
	if err != nil {
		return 0, nil, err
	}
	eps, next, err := s.control.ListEndpoints(r.Context(), id, token, max)
	if err != nil {
		return 0, nil, err
	}
	out := listEndpointsResponse{RuntimeEndpoints: []endpointResponse{}, NextToken: next}
	for _, e := range eps {
		out.RuntimeEndpoints = append(out.RuntimeEndpoints, endpointView(e))
	}
	return http.StatusOK, out, nil
}

// maxControlBody bounds control-plane request bodies.
const maxControlBody = 1 << 20

// decodeJSON decodes a control-plane request body, naming the field at fault
// when a member has the wrong type.
func decodeJSON(r *http.Request, v any) error {
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, maxControlBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return validationError("body", "is larger than %d bytes", maxControlBody)
		}
		return parseError("could not read request body: %v", err)
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return validationError(te.Field, "must be a JSON %s, not %s", te.Type.Kind(), te.Value)
		}
		return parseError("request body is not valid JSON: %v", err)
	}
	return nil
}

func parseVersion(field, s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 1 || v > 99999 || strconv.Itoa(v) != s {
		return 0, validationError(field, "%q is not a version number (1-99999)", s)
	}
	return v, nil
}

func versionParam(r *http.Request, name string) (int, error) {
	return parseVersion(name, r.URL.Query().Get(name))
}

func pageParams(r *http.Request) (max int, token string, err error) {
	q := r.URL.Query()
	max = 100
	if s := q.Get("maxResults"); s != "" {
		max, err = strconv.Atoi(s)
		if err != nil || max < 1 || max > 100 {
			return 0, "", validationError("maxResults", "%q is not a number from 1 to 100", s)
		}
	}
	return max, q.Get("nextToken"), nil
}
