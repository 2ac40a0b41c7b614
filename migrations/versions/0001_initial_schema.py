"""Initial schema: indexes, scan jobs, layers, images, top activations, shard states.

Types are spelled as the database sees them (sa.DateTime(timezone=True) for the models'
UtcDateTime) so the migration does not depend on the models' code as it changes.

Revision ID: 0001
Revises: 

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('indexes',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('model_spec', sa.JSON(), nullable=False),
    sa.Column('dataset_spec', sa.JSON(), nullable=False),
    sa.Column('layers_requested', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('k', sa.Integer(), nullable=False),
    sa.Column('score', sa.String(length=16), nullable=False),
    sa.Column('neuron', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('preprocess', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('pretrained', sa.Boolean(), nullable=True),
    sa.Column('images_total', sa.Integer(), nullable=False),
    sa.Column('images_scanned', sa.Integer(), nullable=False),
    sa.Column('images_skipped', sa.Integer(), nullable=False),
    sa.Column('skipped_reasons', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('scan_seconds', sa.Float(), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('device', sa.String(length=64), nullable=True),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_indexes_status')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_indexes')),
    sqlite_autoincrement=True
    )
    op.create_table('images',
    sa.Column('index_id', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('label', sa.Text(), nullable=True),
    sa.Column('width', sa.Integer(), nullable=True),
    sa.Column('height', sa.Integer(), nullable=True),
    sa.Column('skipped_reason', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['index_id'], ['indexes.id'], name=op.f('fk_images_index_id_indexes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('index_id', 'id', name=op.f('pk_images'))
    )
    op.create_table('layers',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('index_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('type', sa.String(length=100), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('channels', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('rf_size', sa.Integer(), nullable=False),
    sa.Column('rf_jump', sa.Integer(), nullable=False),
    sa.Column('rf_offset', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['index_id'], ['indexes.id'], name=op.f('fk_layers_index_id_indexes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_layers')),
    sa.UniqueConstraint('index_id', 'name', name=op.f('uq_layers_index_id_name'))
    )
    op.create_table('scan_jobs',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('index_id', sa.Integer(), nullable=False),
    sa.Column('shard', sa.Integer(), nullable=True),
    sa.Column('shard_count', sa.Integer(), nullable=False),
    sa.Column('image_start', sa.Integer(), nullable=True),
    sa.Column('image_stop', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress_done', sa.Integer(), nullable=False),
    sa.Column('progress_total', sa.Integer(), nullable=False),
    sa.Column('rate', sa.Float(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')", name=op.f('ck_scan_jobs_status')),
    sa.ForeignKeyConstraint(['index_id'], ['indexes.id'], name=op.f('fk_scan_jobs_index_id_indexes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_scan_jobs'))
    )
    op.create_index(op.f('ix_scan_jobs_index_id'), 'scan_jobs', ['index_id'], unique=False)
    op.create_table('shard_states',
    sa.Column('index_id', sa.Integer(), nullable=False),
    sa.Column('shard', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('state', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['index_id'], ['indexes.id'], name=op.f('fk_shard_states_index_id_indexes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('index_id', 'shard', name=op.f('pk_shard_states'))
    )
    op.create_table('activations',
    sa.Column('index_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('layer_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('unit', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('rank', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('y', sa.Integer(), nullable=False),
    sa.Column('x', sa.Integer(), nullable=False),
    sa.Column('in_x0', sa.Integer(), nullable=False),
    sa.Column('in_y0', sa.Integer(), nullable=False),
    sa.Column('in_x1', sa.Integer(), nullable=False),
    sa.Column('in_y1', sa.Integer(), nullable=False),
    sa.Column('x0', sa.Integer(), nullable=False),
    sa.Column('y0', sa.Integer(), nullable=False),
    sa.Column('x1', sa.Integer(), nullable=False),
    sa.Column('y1', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['index_id'], ['indexes.id'], name=op.f('fk_activations_index_id_indexes'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('index_id', 'layer_id', 'unit', 'rank', name=op.f('pk_activations'))
    )
    op.create_index(op.f('ix_activations_index_id_image_id'), 'activations', ['index_id', 'image_id'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table('activations')
    op.drop_table('shard_states')
    op.drop_table('scan_jobs')
    op.drop_table('layers')
    op.drop_table('images')
    op.drop_table('indexes')
