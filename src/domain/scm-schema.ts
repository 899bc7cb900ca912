/** One source-control system a runner supports, as the service uses it. */
export interface ScmEntry {
  scmId: string;
  name: string;
  defaultHosts: string[];
  /** Whether the runner takes an OAuth app for this system (it sent `oauth`). */
  oauth: boolean;
  /** Whether the runner takes personal access tokens for it (it sent `pat`). */
  pat: boolean;
  patDescription: string;
  patDocsLink: string;
}

export interface RunnerSchema {
  version: string;
  scm: ScmEntry[];
}

/** What applies to a runner that has not published a schema of its own. */
export const DEFAULT_SCHEMA: RunnerSchema = {
  version: "builtin-1",
  scm: [
    {
      scmId: "github",
      name: "GitHub",
      defaultHosts: ["github.com"],
      oauth: true,
      pat: true,
      patDescription: "A classic or fine-grained token with read and write access to repository contents.",
      patDocsLink:
        "https://docs.github.com/en/authentication/keeping-your-account-and-data-secure/managing-your-personal-access-tokens",
    },
    {
      scmId: "gitlab",
      name: "GitLab",
      defaultHosts: ["gitlab.com"],
      oauth: true,
      pat: true,
      patDescription: "A token with the api, read_repository and write_repository scopes.",
      patDocsLink: "https://docs.gitlab.com/ee/user/profile/personal_access_tokens.html",
    },
    {
      scmId: "bitbucket",
      name: "Bitbucket",
      defaultHosts: ["bitbucket.org"],
      oauth: true,
      pat: true,
      patDescription: "An API token or app password with repository read and write permission.",
      patDocsLink: "https://support.atlassian.com/bitbucket-cloud/docs/access-tokens/",
    },
    {
      scmId: "azuredevops_entra",
      name: "Azure DevOps (Microsoft Entra ID)",
      defaultHosts: ["dev.azure.com"],
      oauth: true,
      pat: true,
      patDescription: "A token with the Code (Read & write) scope.",
      patDocsLink:
        "https://learn.microsoft.com/en-us/azure/devops/organizations/accounts/use-personal-access-tokens-to-authenticate",
    },
    {
      scmId: "azuredevops_server",
      name: "Azure DevOps Server",
      defaultHosts: [],
      oauth: false,
      pat: true,
      patDescription: "A token with the Code (Read & write) scope on your server.",
      patDocsLink:
        "https://learn.microsoft.com/en-us/azure/devops/organizations/accounts/use-personal-access-tokens-to-authenticate",
    },
  ],
};

/** scm_ids with rules of their own, whatever schema the runner publishes. */
export const AZURE_ENTRA = "azuredevops_entra";
export const AZURE_SERVER = "azuredevops_server";
