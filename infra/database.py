"""How Conveyor's functions reach PostgreSQL: the network they run in, the secret they read, the host they dial.

Two modes (``conveyor:database``):

* ``existing``: your database. The functions join the VPC subnets and security group you name and read the
  RDS-format secret you name (``host``, ``port``, ``dbname``, ``username``, ``password``); ``proxyEndpoint`` replaces
  the secret's host when you connect through RDS Proxy; ``host`` and ``dbname`` fill in what an RDS-managed master
  secret (username and password only) lacks; ``secretKmsKeyArn`` names the customer key the secret is encrypted
  with, if any (the functions then get ``kms:Decrypt`` on that key through Secrets Manager only). The stack creates
  no network: the subnets must reach SQS, Secrets Manager and the APIs your jobs call (SES for ``email.send``)
  through a NAT gateway or VPC interface endpoints you already have.
* ``create``: a complete stand-alone deploy. A VPC over two AZs (public subnets with one NAT gateway, private
  subnets for the functions, isolated subnets for the database), Aurora Serverless v2 PostgreSQL with a generated
  secret rotated every 30 days, and an RDS Proxy in front of it (TLS required) so short-lived Lambda connections do
  not exhaust the database's. One NAT gateway, not VPC endpoints: handlers call SQS, SES and (on the roadmap) HTTP
  integrations, and one NAT costs less than an interface endpoint per service per AZ.

Credentials never go into environment variables: functions get the secret's ARN and read it at run time through
Powertools Parameters (cached), so a rotation needs no redeploy.
"""

from __future__ import annotations

from aws_cdk import Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import CreatedDatabase, ExistingDatabase
from infra.lambda_defaults import Network, retention
from shared import settings as env
from shared.names import APP

POSTGRES_PORT = 5432
DATABASE_NAME = "conveyor"


class DatabaseAccess(Construct):
    """The database side of every function: ``network`` to run in, ``environment`` to set, ``grant_connect``."""

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        config: ExistingDatabase | CreatedDatabase,
        log_retention_days: int,
        stage: str,
    ) -> None:
        super().__init__(scope, id)
        self.secret_key_arn: str | None = None
        self.cluster: rds.DatabaseCluster | None = None
        self.proxy: rds.DatabaseProxy | None = None
        if isinstance(config, ExistingDatabase):
            self._existing(config)
        else:
            self._create(config, log_retention_days, stage)

    def grant_connect(self, function: iam.IGrantable) -> None:
        self.secret.grant_read(function)
        if self.secret_key_arn:
            # The secret's customer key, usable only by Secrets Manager on the function's behalf.
            function.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt"],
                    resources=[self.secret_key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{Stack.of(self).region}.amazonaws.com"}},
                )
            )

    # -- modes ---------------------------------------------------------------------------------------------------

    def _existing(self, config: ExistingDatabase) -> None:
        # Availability zones are not needed to place functions in known subnets; tokens keep synth offline (no
        # context lookup), one per subnet.
        zones = [Fn.select(i, Fn.get_azs()) for i in range(len(config.subnet_ids))]
        vpc = ec2.Vpc.from_vpc_attributes(
            self, "Vpc", vpc_id=config.vpc_id, availability_zones=zones, private_subnet_ids=list(config.subnet_ids)
        )
        subnets = [ec2.Subnet.from_subnet_id(self, f"Subnet{i}", s) for i, s in enumerate(config.subnet_ids)]
        group = ec2.SecurityGroup.from_security_group_id(self, "FunctionSecurityGroup", config.security_group_id, mutable=False)
        self.network = Network(vpc=vpc, subnets=ec2.SubnetSelection(subnets=subnets), security_group=group)
        self.secret_key_arn = config.secret_kms_key_arn
        self.secret = secretsmanager.Secret.from_secret_complete_arn(self, "Secret", config.secret_arn)
        self.environment = {env.DB_SECRET_ARN: config.secret_arn}
        host = config.proxy_endpoint or config.host
        if host:
            self.environment[env.DB_HOST] = host
        if config.dbname:
            self.environment[env.DB_NAME] = config.dbname

    def _create(self, config: CreatedDatabase, log_retention_days: int, stage: str) -> None:
        flow_logs = logs.LogGroup(self, "FlowLogs", retention=retention(log_retention_days), removal_policy=RemovalPolicy.DESTROY)
        vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=1,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="functions", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ],
            flow_logs={"all": ec2.FlowLogOptions(destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))},
        )
        functions = ec2.SecurityGroup(self, "FunctionSecurityGroup", vpc=vpc, description="Conveyor functions", allow_all_outbound=True)
        database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        identifier = f"{APP}-{stage}"
        # Our own log group for the exported PostgreSQL log, with a retention: the cluster's own retention option
        # would add a custom-resource Lambda just to set it.
        postgres_logs = logs.LogGroup(
            self,
            "PostgresLogs",
            log_group_name=f"/aws/rds/cluster/{identifier}/postgresql",
            retention=retention(log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        cluster = rds.DatabaseCluster(
            self,
            "Cluster",
            cluster_identifier=identifier,
            engine=rds.DatabaseClusterEngine.aurora_postgres(version=rds.AuroraPostgresEngineVersion.VER_17_6),
            writer=rds.ClusterInstance.serverless_v2("Writer"),
            serverless_v2_min_capacity=config.min_capacity,
            serverless_v2_max_capacity=config.max_capacity,
            vpc=vpc,
            vpc_subnets=database_subnets,
            credentials=rds.Credentials.from_generated_secret("conveyor"),
            default_database_name=DATABASE_NAME,
            storage_encrypted=True,
            iam_authentication=True,
            deletion_protection=True,
            cloudwatch_logs_exports=["postgresql"],
            backup=rds.BackupProps(retention=Duration.days(7)),
            removal_policy=RemovalPolicy.SNAPSHOT,
        )
        cluster.node.add_dependency(postgres_logs)
        assert cluster.secret is not None
        cluster.add_rotation_single_user(
            automatically_after=Duration.days(30),
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
        )
        proxy = cluster.add_proxy(
            "Proxy",
            db_proxy_name=identifier,  # unique per stage: proxy names are account- and region-wide
            secrets=[cluster.secret],
            vpc=vpc,
            vpc_subnets=database_subnets,
            require_tls=True,
            iam_auth=False,  # functions authenticate with the secret's password, over TLS
        )
        proxy.connections.allow_from(functions, ec2.Port.tcp(POSTGRES_PORT), "Conveyor functions to RDS Proxy")
        self.cluster, self.proxy, self.secret = cluster, proxy, cluster.secret
        self.network = Network(
            vpc=vpc,
            subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            security_group=functions,
        )
        self.environment = {env.DB_SECRET_ARN: cluster.secret.secret_arn, env.DB_HOST: proxy.endpoint}
