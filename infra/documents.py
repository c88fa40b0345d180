"""The documents bucket: rendered PDFs (``documents/``) and zipped packages of them (``packages/``).

Created only when a registry job's permission names ``{documents_bucket}`` (``shared.registry.AwsPermission``); its
name reaches those jobs' functions as ``CONVEYOR_DOCUMENTS_BUCKET``, and their roles get exactly the object ARNs
they declare. Why these settings:

* CloudFormation names the bucket, and the stack passes the name on. A fixed name (S3 names are global) could be
  taken by any other account, and a retained bucket would keep its name after ``cdk destroy``, so the next create
  of the stack under the same stage would fail on it.
* ``RETAIN``: the bucket holds the invoices and statements tenants were sent; deleting the stack must not delete
  them. (The stack stays re-creatable: the new bucket gets a new generated name.)
* SSE-S3 (S3-managed keys): encrypted at rest with nothing to grant. A KMS key would need ``kms:GenerateDataKey``
  and ``kms:Decrypt`` on every role that touches an object, a key policy and a monthly fee, and protects nothing
  more here: only this stack's roles can read the bucket at all.
* TLS only (a bucket policy denying ``aws:SecureTransport`` false), all public access blocked, ACLs disabled
  (bucket owner enforced): no object is ever public, whatever a job's put request says.
* Versioning on: a rendered invoice is a document someone was sent; a bug that re-renders it wrongly, or a delete,
  must be recoverable. Noncurrent versions expire after ``NONCURRENT_DAYS``, so re-renders do not pile up.
* Packages expire after ``PACKAGE_DAYS``: a zip is a convenience copy of PDFs kept under ``documents/``, made to be
  downloaded soon. Incomplete multipart uploads (large zips) are aborted after a week instead of billed forever.
* Server access logs (cdk-nag AwsSolutions-S1) go to a small bucket of their own, kept ``LOG_DAYS``; that bucket is
  not logged itself (logging it into itself would log its own log writes, and a third bucket would only move the
  question), which its S1 acknowledgement says. It uses SSE-S3 because S3 server access logging cannot write to a
  bucket whose default encryption is SSE-KMS.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.checks import acknowledge

DOCUMENTS_PREFIX = "documents/"
PACKAGES_PREFIX = "packages/"
PACKAGE_DAYS = 30
NONCURRENT_DAYS = 90
INCOMPLETE_UPLOAD_DAYS = 7
LOG_DAYS = 365


class DocumentsBucket(Construct):
    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=RemovalPolicy.RETAIN,
            lifecycle_rules=[s3.LifecycleRule(id="expire-logs", expiration=Duration.days(LOG_DAYS))],
        )
        acknowledge(
            self.access_logs,
            id="AwsSolutions-S1",
            reason="This is the documents bucket's server access log bucket: logging it into itself would log its "
            "own log deliveries, and logging it elsewhere would only need yet another bucket.",
        )
        self.bucket = s3.Bucket(
            self,
            "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            versioned=True,
            removal_policy=RemovalPolicy.RETAIN,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="documents-bucket/",
            lifecycle_rules=[
                s3.LifecycleRule(id="expire-packages", prefix=PACKAGES_PREFIX, expiration=Duration.days(PACKAGE_DAYS)),
                s3.LifecycleRule(id="expire-old-versions", noncurrent_version_expiration=Duration.days(NONCURRENT_DAYS)),
                s3.LifecycleRule(
                    id="abort-incomplete-uploads", abort_incomplete_multipart_upload_after=Duration.days(INCOMPLETE_UPLOAD_DAYS)
                ),
            ],
        )

    @property
    def bucket_name(self) -> str:
        return self.bucket.bucket_name
