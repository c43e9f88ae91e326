package admin

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/llmproxy-go/llmproxy/controlplane/diff"
	"github.com/llmproxy-go/llmproxy/controlplane/redact"
	"github.com/llmproxy-go/llmproxy/controlplane/store"
	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
	configv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/config/v1"
)

// Page sizes of ListRevisions.
const (
	defaultPageSize = 50
	maxPageSize     = 1000
)

// ListRevisions pages through the kept revisions, newest first. A page token is the
// revision below which the next page starts.
func (s *Server) ListRevisions(ctx context.Context, req *adminv1.ListRevisionsRequest) (*adminv1.ListRevisionsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	var before uint64
	if tok := req.GetPageToken(); tok != "" {
		v, err := strconv.ParseUint(tok, 10, 64)
		if err != nil || v == 0 {
			return nil, invalidField("page_token", "%q is not a next_page_token of this API", tok)
		}
		before = v
	}
	rev, _, err := s.store.Load(ctx)
	if err != nil {
		return nil, s.toStatus(ctx, "ListRevisions", err)
	}
	infos, err := s.store.History(ctx, before, size+1) // one more tells whether a page follows
	if err != nil {
		return nil, s.toStatus(ctx, "ListRevisions", err)
	}
	resp := &adminv1.ListRevisionsResponse{Revision: rev}
	if len(infos) > size {
		infos = infos[:size]
		resp.NextPageToken = strconv.FormatUint(infos[size-1].Revision, 10)
	}
	for _, info := range infos {
		resp.Revisions = append(resp.Revisions, revisionInfo(info))
	}
	setHeaders(ctx, rev, 0)
	return resp, nil
}

// GetRevision returns a kept revision with its whole config, secrets redacted.
func (s *Server) GetRevision(ctx context.Context, req *adminv1.GetRevisionRequest) (*adminv1.GetRevisionResponse, error) {
	info, cfg, err := s.revision(ctx, "GetRevision", "revision", req.GetRevision())
	if err != nil {
		return nil, err
	}
	return &adminv1.GetRevisionResponse{Info: revisionInfo(info), Config: redact.Config(cfg)}, nil
}

// DiffRevisions compares a kept revision with base (default: the revision before it;
// 0: the empty config), resource by resource, secrets withheld.
func (s *Server) DiffRevisions(ctx context.Context, req *adminv1.DiffRevisionsRequest) (*adminv1.ConfigDiff, error) {
	rev := req.GetRevision()
	if rev == 0 {
		return nil, invalidField("revision", "must be 1 or more")
	}
	base := rev - 1
	if req.Base != nil {
		base = req.GetBase()
	}
	_, cfg, err := s.revision(ctx, "DiffRevisions", "revision", rev)
	if err != nil {
		return nil, err
	}
	baseCfg := &configv1.Config{}
	if base > 0 {
		if _, baseCfg, err = s.revision(ctx, "DiffRevisions", "base", base); err != nil {
			return nil, err
		}
	}
	return &adminv1.ConfigDiff{BaseRevision: base, Revision: rev, Resources: diff.Configs(baseCfg, cfg)}, nil
}

// RollbackRevision applies the stored config of a kept revision, secrets included, as a
// new revision: history stays linear. It is checked like ApplyConfig, without the
// mass-deletion guard (the target is named explicitly). The change message defaults to
// "rollback to revision N".
func (s *Server) RollbackRevision(ctx context.Context, req *adminv1.RollbackRevisionRequest) (*adminv1.ApplyConfigResponse, error) {
	target := req.GetRevision()
	if target == 0 {
		return nil, invalidField("revision", "must be 1 or more")
	}
	w, err := newWrite("RollbackRevision", req)
	if err != nil {
		return nil, err
	}
	w.whole = true
	if w.message == "" {
		w.message = fmt.Sprintf("rollback to revision %d", target)
	}
	_, cfg, err := s.revision(ctx, "RollbackRevision", "revision", target)
	if err != nil {
		return nil, err
	}
	r, err := s.commit(ctx, w, func(next *configv1.Config) (pathRewrite, error) {
		proto.Reset(next)
		proto.Merge(next, cfg)
		return pathRewrite{}, nil
	})
	if err != nil {
		return nil, err
	}
	setHeaders(ctx, r.rev, 0)
	return &adminv1.ApplyConfigResponse{Revision: r.rev, DryRun: r.dryRun, Diff: r.diff, Fleet: r.fleet}, nil
}

// revision reads a kept revision (secrets in clear); field names the request field for a
// NOT_FOUND answer.
func (s *Server) revision(ctx context.Context, op, field string, rev uint64) (store.RevisionInfo, *configv1.Config, error) {
	info, cfg, err := s.store.Revision(ctx, rev)
	if errors.Is(err, store.ErrNotFound) {
		st := status.Newf(codes.NotFound, "%s %d is not in the history: pruned (see --history) or never committed", field, rev)
		return store.RevisionInfo{}, nil, withResource(st,
			&errdetails.ResourceInfo{ResourceType: ResourceRevision, ResourceName: strconv.FormatUint(rev, 10)})
	}
	if err != nil {
		return store.RevisionInfo{}, nil, s.toStatus(ctx, op, err)
	}
	return info, cfg, nil
}

// revisionInfo is the API form of a history entry.
func revisionInfo(info store.RevisionInfo) *adminv1.RevisionInfo {
	return &adminv1.RevisionInfo{
		Revision:   info.Revision,
		CreateTime: timestamppb.New(info.Time),
		Operation:  info.Operation,
		Resources:  info.Resources,
		Message:    info.Message,
		Actor:      info.Actor,
	}
}
