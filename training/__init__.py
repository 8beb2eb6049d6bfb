"""GeoLangBind training: datasets and captions, teachers, MaKA distillation, merging, train and eval."""
