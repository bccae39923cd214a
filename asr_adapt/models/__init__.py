"""Backbones behind one small interface (:class:`asr_adapt.models.base.Backbone`)."""
