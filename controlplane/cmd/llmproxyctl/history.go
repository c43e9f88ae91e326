package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	adminv1 "github.com/llmproxy-go/llmproxy/gen/llmproxy/admin/v1"
)

func newHistoryCommand(c *cli) *cobra.Command {
	var (
		pageSize  uint32
		pageToken string
		all       bool
	)
	cmd := &cobra.Command{
		Use:   "history [--page-size N] [--page-token TOKEN | --all]",
		Short: "List the config's revisions, newest first",
		Long: `List the revisions the control plane keeps (see its --history flag), newest first: when each
was made, by whom, by which operation, the resources it touched and its change message
(-m on every write). Without --all one page is printed; a line at its end gives the
command for the next, older page. -o json prints what GET /api/v1/revisions answers.

llmproxyctl diff REV shows what a revision changed; llmproxyctl rollback REV applies an
older revision's config again.`,
		Example: `  llmproxyctl history
  llmproxyctl history --page-size 10
  llmproxyctl history --all -o json`,
		Args: cobra.NoArgs,
	}
	cmd.Flags().Uint32Var(&pageSize, "page-size", 0, "revisions per page, `N` (default: the server's, 50; at most 1000)")
	cmd.Flags().StringVar(&pageToken, "page-token", "", "start at this `TOKEN`, printed at the end of the previous page")
	cmd.Flags().BoolVar(&all, "all", false, "print every kept revision, all pages")
	out := addOutputFlag(cmd, "table", "yaml", "json")
	cmd.RunE = func(cmd *cobra.Command, _ []string) error {
		if all && pageToken != "" {
			return usagef("--all and --page-token exclude each other")
		}
		client, ctx, done, err := c.connect()
		if err != nil {
			return err
		}
		defer done()
		var resp *adminv1.ListRevisionsResponse
		token := pageToken
		for {
			page, err := client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{PageSize: pageSize, PageToken: token})
			if err != nil {
				return err
			}
			if resp == nil {
				resp = page
			} else {
				resp.Revisions = append(resp.Revisions, page.GetRevisions()...)
				resp.NextPageToken = page.GetNextPageToken()
			}
			token = page.GetNextPageToken()
			if !all || token == "" {
				break
			}
		}
		return c.printMessage(out.value, resp, func() error { return c.historyTable(resp, pageSize) })
	}
	return cmd
}

// historyTable prints revisions as a table, newest first, and how to get the next page.
func (c *cli) historyTable(resp *adminv1.ListRevisionsResponse, pageSize uint32) error {
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REVISION\tTIME\tACTOR\tOPERATION\tRESOURCES\tMESSAGE")
	for _, r := range resp.GetRevisions() {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", r.GetRevision(), timeText(r.GetCreateTime()), orDash(r.GetActor()),
			orDash(r.GetOperation()), orDash(resourceList(r.GetResources())), orDash(oneLine(r.GetMessage())))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if next := resp.GetNextPageToken(); next != "" {
		more := "llmproxyctl history --page-token " + next
		if pageSize != 0 {
			more += " --page-size " + strconv.FormatUint(uint64(pageSize), 10)
		}
		fmt.Fprintf(c.stdout, "older revisions: %s\n", more)
	}
	return nil
}

// resourceList joins the resources a revision touched, the first few of them.
func resourceList(resources []string) string {
	const show = 4
	if len(resources) <= show {
		return strings.Join(resources, ",")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(resources[:show], ","), len(resources)-show)
}

// orDash is s, or "-" when s is empty, so a table cell is never blank.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// completeRevisions completes up to n revision arguments with the newest kept revisions.
func (c *cli) completeRevisions(n int) cobra.CompletionFunc {
	return func(_ *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) >= n {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return c.completeFromServer(func(ctx context.Context, client adminv1.AdminServiceClient) ([]string, error) {
			resp, err := client.ListRevisions(ctx, &adminv1.ListRevisionsRequest{})
			var revs []string
			for _, r := range resp.GetRevisions() {
				revs = append(revs, strconv.FormatUint(r.GetRevision(), 10))
			}
			return revs, err
		}, toComplete)
	}
}
