"""Deploy to Kubernetes: render the Helm chart under ``k8s/charts/tritonrec`` into manifests
(``tritonrec k8s render``) through Helm's own library, for users who do not run Helm."""
